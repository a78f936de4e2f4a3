-- Kallglot's X-Request-ID of the answer to each start attempt (GET /admin/calls/{id}, calls show):
-- the id Kallglot's support asks for.
ALTER TABLE attempts ADD COLUMN request_id TEXT;
