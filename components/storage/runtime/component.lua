-- Fluent Bit filter: set `component` on every record, the key Firehose partitions by.
-- The workload's app.kubernetes.io/name label, else its `app` label, else the container's
-- name, else its namespace; lower-case letters, digits and '-' only (it becomes an S3 prefix).
local function sanitize(value)
  local text = string.lower(tostring(value))
  text = string.gsub(text, "[^a-z0-9-]", "-")
  text = string.sub(text, 1, 63)
  if text == "" then
    return "unknown"
  end
  return text
end

function set_component(tag, timestamp, record)
  local component = nil
  local kubernetes = record["kubernetes"]
  if type(kubernetes) == "table" then
    local labels = kubernetes["labels"]
    if type(labels) == "table" then
      component = labels["app.kubernetes.io/name"] or labels["app"]
    end
    component = component or kubernetes["container_name"] or kubernetes["namespace_name"]
  end
  record["component"] = sanitize(component or "unknown")
  -- 2: record modified, timestamp kept
  return 2, timestamp, record
end
