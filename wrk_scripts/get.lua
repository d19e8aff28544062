-- GET /v0/entity?id=<random 3 letters>.
-- Usage: wrk -t1 -c64 -d30s -s wrk_scripts/get.lua http://127.0.0.1:8080
--        wrk2 -t64 -c64 -d60s -R20000 -L -s wrk_scripts/get.lua http://127.0.0.1:8080
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
require("common").workload("GET", false)
