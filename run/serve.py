"""Serve trained models over an OpenAI-compatible HTTP API (and a web page with --web).

    python run/serve.py --model cci-a=runs/cci/a --model cci-b=runs/cci/b --model base=rtzr/ko-gemma-2-9b-it
    python run/serve.py --model a=runs/cci/a --model b=runs/cci/b --model c=runs/cci/c \\
        --ensemble vote3=a,b,c                      # three adapters voted as one model
    python run/serve.py --model mina=runs/chat/mina --web --sessions sessions/server
    python run/serve.py --model m=runs/memory/qwen --host 0.0.0.0 --api_key "$KEY"   # reachable from others

--model NAME=SOURCE (repeatable): a run folder, LoRA adapter folder, model folder or hub id,
served under NAME (SOURCE alone: named after its last path part). Adapters of one base are
loaded on it once and chosen per request by "model"; concurrent requests are batched per
adapter (--batch_window_ms, --max_batch). --ensemble NAME=A,B,C serves models as one that
answers task items by vote (A:2 weights A; --vote_method as ensemble/vote.py's --method).

Routes: GET /v1/models, POST /v1/chat/completions (stream true/false; "session": ID keeps
run/chat.py's summary-buffer memory on the server, saved in --sessions), POST
/v1/tasks/TASK/predict ({"model", "items": [...official format...]}), GET /v1/sessions/ID,
/web (the Gradio page, --web). Safe by default: binds 127.0.0.1; another --host needs
--api_key (or MALPYEONG_API_KEY); bodies, prompts, replies and items per request are bounded;
no request names a file. Ctrl-C finishes the requests in flight, saves the sessions and exits.
--engine vllm serves through vLLM (its LoRA support for adapters) where it is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from malpyeong.cli import run_cli, verbose_argument
from malpyeong.dialogue import MEMORIES
from malpyeong.ensemble import METHODS
from malpyeong.errors import UserError
from malpyeong.serving import (
    Limits,
    ServeConfig,
    SessionDefaults,
    parse_ensemble,
    parse_model,
    require_libraries,
)
from malpyeong.serving.registry import vllm_commands


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME=SOURCE", help="a model to serve")
    p.add_argument(
        "--ensemble", action="append", default=[], metavar="NAME=A,B,C", help="served models voted"
    )
    p.add_argument("--vote_method", choices=METHODS, help="how ensembles vote (default hard, as vote.py)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api_key", default=os.environ.get("MALPYEONG_API_KEY"), help="required Bearer key")
    p.add_argument("--web", action="store_true", help="also serve the web page at /web")
    p.add_argument("--sessions", default="sessions/server", help="folder of the chat sessions")
    p.add_argument("--engine", default="hf", choices=("hf", "vllm"))
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="--engine vllm: GPUs per model")
    p.add_argument(
        "--vllm_command",
        action="store_true",
        help="print the equivalent `vllm serve --lora-modules ...` command(s) and exit (loads nothing)",
    )
    p.add_argument("--dtype", default="auto")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--trust_remote_code", action="store_true", default=None)
    g = p.add_argument_group("batching")
    g.add_argument("--batch_window_ms", type=float, default=10.0, help="how long a batch waits for more")
    g.add_argument("--max_batch", type=int, default=32, help="requests per batch at most")
    g = p.add_argument_group("limits")
    g.add_argument("--max_body_bytes", type=int, default=Limits.max_body_bytes)
    g.add_argument("--max_prompt_tokens", type=int, default=Limits.max_prompt_tokens)
    g.add_argument("--max_new_tokens", type=int, default=Limits.max_new_tokens, help="most a request may ask")
    g.add_argument("--max_items", type=int, default=Limits.max_items, help="task items per request")
    g.add_argument("--drain_timeout", type=float, default=60.0, help="seconds Ctrl-C waits for requests")
    g = p.add_argument_group("chat sessions (run/chat.py's memory)")
    g.add_argument("--memory", choices=MEMORIES, default=SessionDefaults.memory)
    g.add_argument("--memory_tokens", type=int, default=SessionDefaults.memory_tokens)
    g.add_argument("--summary_tokens", type=int, default=SessionDefaults.summary_tokens)
    g.add_argument(
        "--summarizer", default=None, help="'extractive', or a served NAME (default: the chat model itself)"
    )
    g.add_argument(
        "--reply_tokens", type=int, default=SessionDefaults.max_new_tokens, help="a reply's length"
    )
    verbose_argument(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    models: dict[str, str] = {}
    for spec in args.model:
        name, source = parse_model(spec)
        models.setdefault(name, source)
        if models[name] != source:
            raise UserError(f"two models named {name}", field="model", hint="NAME=SOURCE names each")
    config = ServeConfig(
        models=models,
        ensembles=tuple(parse_ensemble(e) for e in args.ensemble),
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        engine=args.engine,
        dtype=args.dtype,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
        tensor_parallel_size=args.tensor_parallel_size,
        window=args.batch_window_ms / 1000,
        max_batch=args.max_batch,
        limits=Limits(args.max_body_bytes, args.max_prompt_tokens, args.max_new_tokens, args.max_items),
        sessions=Path(args.sessions),
        session_defaults=SessionDefaults(
            args.memory, args.memory_tokens, args.summary_tokens, args.summarizer, args.reply_tokens
        ),
        vote_method=args.vote_method,
        web=args.web,
        drain_timeout=args.drain_timeout,
    )
    if args.vllm_command:
        for command in vllm_commands(config):
            print(command)
        return 0
    require_libraries(web=args.web)
    from malpyeong.serving.server import serve  # FastAPI and uvicorn: the serve extra

    return serve(config, out=lambda line: print(line, flush=True))


if __name__ == "__main__":
    sys.exit(run_cli(main))
