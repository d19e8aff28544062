-- The seed's workload, shared by put.lua, get.lua and delete.lua.
--
-- ids: random strings of length 3 over [a-zA-Z0-9] (62^3 = 238,328 keys);
-- bodies: random strings of length 300. Works with wrk 4 and wrk2 alike:
-- it uses only setup/init/request and wrk.format.

local common = {}

local ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
common.ID_LENGTH = 3
common.BODY_LENGTH = 300

-- Two knobs from the environment, for benchmarks/cluster.py: a smaller key
-- space (SELECTORKV_ID_LENGTH=2: 3,844 keys, quick to fill over HTTP) and a
-- query suffix for every request (SELECTORKV_QUERY="&ack=1&from=1").
common.ID_LENGTH = tonumber(os.getenv("SELECTORKV_ID_LENGTH") or "") or common.ID_LENGTH
local QUERY = os.getenv("SELECTORKV_QUERY") or ""

function common.random_string(length)
  local letters = {}
  for i = 1, length do
    local k = math.random(#ALPHABET)
    letters[i] = ALPHABET:sub(k, k)
  end
  return table.concat(letters)
end

function common.entity_path()
  return "/v0/entity?id=" .. common.random_string(common.ID_LENGTH) .. QUERY
end

-- Give every wrk thread its own random sequence: each thread has its own
-- Lua state, and without a distinct seed they would all send the same keys.
local threads = 0
function common.setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function common.init()
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end

-- Install setup/init/request in the calling script's globals.
function common.workload(method, with_body)
  setup = common.setup
  init = common.init
  request = function()
    local body = nil
    if with_body then
      body = common.random_string(common.BODY_LENGTH)
    end
    return wrk.format(method, common.entity_path(), nil, body)
  end
end

return common
