-- The seed's workload, shared by put.lua, get.lua and delete.lua.
--
-- ids: random strings of length 3 over [a-zA-Z0-9] (62^3 = 238,328 keys);
-- bodies: random strings of length 300. Works with wrk 4 and wrk2 alike:
-- it uses only setup/init/request and wrk.format.

local common = {}

local ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
common.ID_LENGTH = 3
common.BODY_LENGTH = 300

-- Knobs from the environment, for benchmarks/cluster.py and benchmarks/hop.py:
-- a smaller key space (SELECTORKV_ID_LENGTH=2: 3,844 keys, quick to fill
-- over HTTP), a query suffix for every request (SELECTORKV_QUERY="&ack=1&from=1"),
-- and keys chosen from a file, one per line (SELECTORKV_KEYS_FILE: the keys
-- whose replica is a given node, for one).
common.ID_LENGTH = tonumber(os.getenv("SELECTORKV_ID_LENGTH") or "") or common.ID_LENGTH
local QUERY = os.getenv("SELECTORKV_QUERY") or ""
local KEYS = nil
local KEYS_FILE = os.getenv("SELECTORKV_KEYS_FILE")
if KEYS_FILE and KEYS_FILE ~= "" then
  KEYS = {}
  for line in io.lines(KEYS_FILE) do
    if line ~= "" then KEYS[#KEYS + 1] = line end
  end
  assert(#KEYS > 0, "SELECTORKV_KEYS_FILE names a file without keys")
end

function common.random_string(length)
  local letters = {}
  for i = 1, length do
    local k = math.random(#ALPHABET)
    letters[i] = ALPHABET:sub(k, k)
  end
  return table.concat(letters)
end

function common.entity_path()
  local id
  if KEYS then
    id = KEYS[math.random(#KEYS)]
  else
    id = common.random_string(common.ID_LENGTH)
  end
  return "/v0/entity?id=" .. id .. QUERY
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
