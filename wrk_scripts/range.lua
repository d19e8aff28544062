-- GET /v0/entities?start=<random 3 letters>&end=<the same with its last letter advanced>:
-- short ranges over the seed's key space (62 possible keys share two letters).
-- Usage: wrk -t1 -c16 -d30s -s wrk_scripts/range.lua http://127.0.0.1:8080
package.path = debug.getinfo(1, "S").source:match("^@(.*/)") .. "?.lua;" .. package.path
local common = require("common")

setup = common.setup
init = common.init
request = function()
  local prefix = common.random_string(2)
  return wrk.format("GET", "/v0/entities?start=" .. prefix .. "&end=" .. prefix .. "~")
end
