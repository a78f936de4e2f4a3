"""The operator console at ``/admin/console`` (CONTRACT §9): server-rendered pages (Starlette +
Jinja2, no front-end build, no external assets, no script at all) over the same operations as the
admin API. Log in with the admin token (a signed HttpOnly SameSite=Strict session cookie; the token
is never in a URL or a page), a CSRF token on every POST, a strict Content-Security-Policy and
``X-Frame-Options: DENY`` on every answer."""

from receiver.console.pages import CONSOLE_ROUTES

__all__ = ["CONSOLE_ROUTES"]
