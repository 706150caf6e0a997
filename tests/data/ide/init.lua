-- Neovim configuration for tests/serve/test_ide.py: use `guided ide` as the language server of the
-- opened file, ask it for a completion and an inline completion at a position, apply the
-- completion like an accepted menu item, and save the results. Neovim 0.7+ (Debian's).
--
-- Environment: GUIDED_IDE_CMD (JSON list: the server command), GUIDED_IDE_OUT (folder for the
-- results), GUIDED_IDE_LINE / GUIDED_IDE_COL (0-based cursor position), GUIDED_IDE_TIMEOUT_MS.

local cmd = vim.fn.json_decode(os.getenv("GUIDED_IDE_CMD"))
local out = os.getenv("GUIDED_IDE_OUT")
local line = tonumber(os.getenv("GUIDED_IDE_LINE"))
local col = tonumber(os.getenv("GUIDED_IDE_COL"))
local timeout = tonumber(os.getenv("GUIDED_IDE_TIMEOUT_MS") or "90000")

local function save(name, value)
  local f = assert(io.open(out .. "/" .. name, "w"))
  f:write(type(value) == "string" and value or vim.fn.json_encode(value))
  f:close()
end

local function finish(status)
  save("status", status)
  vim.cmd("qall!")
end

local function run()
  local bufnr = vim.api.nvim_get_current_buf()
  local client_id = vim.lsp.start_client({
    name = "guided",
    cmd = cmd,
    root_dir = vim.fn.fnamemodify(vim.api.nvim_buf_get_name(bufnr), ":p:h"),
  })
  assert(client_id, "the language server did not start")
  vim.lsp.buf_attach_client(bufnr, client_id)
  local up = vim.wait(timeout, function()
    local client = vim.lsp.get_client_by_id(client_id)
    return client ~= nil and client.initialized == true
  end, 50)
  assert(up, "the language server did not initialize")
  local client = vim.lsp.get_client_by_id(client_id)
  save("capabilities.json", client.server_capabilities or client.resolved_capabilities or {})

  -- the cursor as in insert mode at (line, col): after the last character of the line
  local params = { textDocument = vim.lsp.util.make_text_document_params(), position = { line = line, character = col } }
  local responses = vim.lsp.buf_request_sync(bufnr, "textDocument/completion", params, timeout)
  save("completion.json", responses or {})
  local item
  for _, response in pairs(responses or {}) do
    local result = response.result or {}
    local items = result.items or result
    if items and items[1] then item = items[1] end
  end
  assert(item, "no completion item")
  -- accept it: apply its edit to the buffer and save the buffer
  vim.lsp.util.apply_text_edits({ item.textEdit }, bufnr, client.offset_encoding or "utf-16")
  vim.cmd("write! " .. out .. "/completed.py")

  local inline = vim.lsp.buf_request_sync(bufnr, "textDocument/inlineCompletion",
    vim.tbl_extend("force", params, { context = { triggerKind = 1 } }), timeout)
  save("inline.json", inline or {})

  vim.lsp.stop_client(client_id)
  vim.wait(5000, function() return vim.lsp.get_client_by_id(client_id) == nil end, 50)
end

-- init.lua runs before the file is read: start once Neovim has the file in its buffer
vim.api.nvim_create_autocmd("VimEnter", {
  once = true,
  callback = function()
    local ok, err = pcall(run)
    finish(ok and "ok" or ("error: " .. tostring(err)))
  end,
})
