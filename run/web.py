"""The web page of a running server, on its own (run/serve.py --web serves the same page at /web).

    python run/serve.py --model mina=runs/chat/mina &          # the server
    python run/web.py --server http://127.0.0.1:8000           # the page: http://127.0.0.1:7860

Tabs: Chat (a served model, a character, streamed replies in a server-side session, the memory
panel with the summary and the verbatim buffer, Reset), Memory state (paste a dialogue, get the
JSON state of a task with a JSON output), Task (an item in a task's official format, the
answer with its option probabilities). The page talks to --server over its HTTP API only.
Binds 127.0.0.1 unless --host says otherwise (then --api_key is required, and the page asks
for it as its password).
"""

from __future__ import annotations

import argparse
import os
import sys

from malpyeong.cli import run_cli, verbose_argument
from malpyeong.errors import UserError
from malpyeong.serving.config import check_bind, require_libraries


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="the server's address, e.g. http://127.0.0.1:8000")
    p.add_argument("--api_key", default=os.environ.get("MALPYEONG_API_KEY"), help="the server's key")
    p.add_argument("--host", default="127.0.0.1", help="where the page listens (default this machine)")
    p.add_argument("--port", type=int, default=7860)
    verbose_argument(p)
    args = p.parse_args(argv)
    check_bind(args.host, args.api_key)
    require_libraries(web=True)
    from malpyeong.serving.web import ApiClient, PageError, build_page  # the serve extra

    api = ApiClient(args.server, args.api_key)
    try:
        served = api.models()
    except PageError as err:
        raise UserError(f"the server refused: {err}", field="server") from None
    except Exception as err:  # noqa: BLE001 - httpx's connection errors, one line
        raise UserError(f"cannot reach {args.server} ({type(err).__name__})", field="server") from None
    print(f"{args.server}: {len(served)} model(s); page on http://{args.host}:{args.port}", flush=True)
    page = build_page(api)
    auth = (lambda user, password: password == args.api_key) if args.api_key else None
    page.launch(server_name=args.host, server_port=args.port, auth=auth, ssr_mode=False, footer_links=[])
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
