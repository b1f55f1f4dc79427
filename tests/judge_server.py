"""A scripted OpenAI-compatible judge for the tests: a real HTTP server on 127.0.0.1 (stdlib
http.server in a thread) serving ``POST /v1/chat/completions``.

Its answers are scripted by markers inside the candidate texts, so a test states each pair's
behaviour in its sample data:

- ``GOOD`` in exactly one candidate: that position is preferred (a consistent judge); in
  neither or both: always "A" (a position-biased judge, which `--orders both` turns into a tie).
- ``@429`` / ``@500``: the first request of a prompt is answered 429 (Retry-After: 0) / 500.
- ``@SLOW``: the first request of a prompt sleeps ``slow_s`` before answering (a client timeout).
- ``@GARBLE_ONCE``: the first answer to a prompt has no verdict; later ones are normal.
- ``@GARBLE_ALWAYS`` / ``@EMPTY``: every answer has no verdict / empty content.
- ``@BOLD``: the verdict is written in Markdown (``**Preferred:** **B**``).
- ``@400``: a 400 whose message echoes the request's Authorization header (tests redaction).

"First request of a prompt" counts per exact prompt text, so each order of a pair has its own
first request. Usage is reported as ~4 characters a token, like English text through a BPE.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_CANDIDATES = re.compile(
    r"(?:Summary|Response) A:\n(?P<a>.*?)\n\n(?:Summary|Response) B:\n(?P<b>.*?)\n\nFIRST", re.S
)


class ScriptedJudge:
    def __init__(self, *, slow_s: float = 1.5) -> None:
        self.slow_s = slow_s
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []  # one entry per HTTP request: status, authorization, model
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------- lifecycle

    def __enter__(self) -> ScriptedJudge:
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, payload, headers, delay = judge.respond(
                    self.path, body, self.headers.get("Authorization", "")
                )
                if delay:
                    time.sleep(delay)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> int:
        return len(self.log)

    # ------------------------------------------------------------------------- script

    def respond(self, path: str, body: dict[str, Any], authorization: str) -> tuple[int, dict, dict, float]:
        prompt = body["messages"][-1]["content"]
        with self.lock:
            self.seen[prompt] += 1
            nth = self.seen[prompt]
        status, payload, headers, delay = self._script(prompt, nth, authorization, body.get("model", ""))
        with self.lock:
            self.log.append(
                {
                    "path": path,
                    "status": status,
                    "authorization": authorization,
                    "model": body.get("model"),
                    "nth": nth,
                    "slow": bool(delay),
                }
            )
        return status, payload, headers, delay

    def _script(self, prompt: str, nth: int, authorization: str, model: str) -> tuple[int, dict, dict, float]:
        match = _CANDIDATES.search(prompt)
        first, second = (match.group("a"), match.group("b")) if match else ("", "")
        if "@400" in prompt:
            return (
                400,
                _error(f"invalid request (Authorization: {authorization})", "invalid_request_error"),
                {},
                0,
            )
        if "@429" in prompt and nth == 1:
            return 429, _error("Rate limit reached", "rate_limit_error"), {"Retry-After": "0"}, 0
        if "@500" in prompt and nth == 1:
            return 500, _error("The server had an error", "server_error"), {}, 0
        delay = self.slow_s if "@SLOW" in prompt and nth == 1 else 0.0
        if "@EMPTY" in prompt:
            text = ""
        elif "@GARBLE_ALWAYS" in prompt or ("@GARBLE_ONCE" in prompt and nth == 1):
            text = "Both summaries have their merits; it is hard to say."
        else:
            good_first, good_second = "GOOD" in first, "GOOD" in second
            choice = "B" if good_second and not good_first else "A"
            scores = (0.8, 0.3) if choice == "A" else (0.3, 0.8)
            if "@BOLD" in prompt:
                text = (
                    f"**Comparison:** Summary {choice} is more precise.\n\n**Preferred:** **{choice}**\n"
                    f"**Score for Summary A:** {scores[0]}\n**Score for Summary B:** {scores[1]}"
                )
            else:
                text = (
                    f"Comparison: Summary {choice} is more precise and concise.\nPreferred: {choice}\n"
                    f"Score for Summary A: {scores[0]}\nScore for Summary B: {scores[1]}"
                )
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": max(1, len(text) // 4)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        payload = {
            "id": f"chatcmpl-{nth}",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
        return 200, payload, {}, delay


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
