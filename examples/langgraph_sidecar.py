"""AVP as a sidecar to a LangGraph graph: the graph's nodes pass only text; the KV-cache the first
node computed travels beside that text to the other agents, over the A2A extension and the MCP
binding (spec/avp-a2a.md, spec/avp-mcp.md).

    python examples/langgraph_sidecar.py --model smollm2      # real SmolLM2-135M agents
    python examples/langgraph_sidecar.py --model echo         # no model: protocol only

The graph (state: text only):

    read   (local agent)   reads the question: its KV-cache goes into the sidecar, keyed by the
                           prompt text it hands on; the state gets only that text
    a2a    (remote agent)  the A2A client sends the prompt; the sidecar's KV-cache rides as an
                           AVP part (by value or by reference, whichever its size asks for)
    mcp    (tool server)   the MCP tool ``avp_answer`` gets the same prompt and the same cache

Both remote agents run in this process on 127.0.0.1 (one hypercorn server each, with the HTTP
binding beside the protocol), so the example needs no setup; point ``--a2a`` / ``--mcp`` at
running servers (``python -m avp_agents.a2a_server``, ``python -m avp_agents.mcp_server``)
to use those instead. Prints one ``SIDECAR {json}`` line per remote answer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import avp_http
from avp_agents import A2AServer, MCPServer, PayloadHost
from avp_agents.a2a_client import A2AClient, Initiator, initiator_for
from avp_agents.mcp_client import client_extension, payload_argument, server_params
from avp_agents.responder import echo_kv, load_responder
from langgraph.graph import END, START, StateGraph
from mcp import Client

import avp_codec as avp


class State(TypedDict, total=False):
    question: str
    prompt: str
    a2a_answer: str
    mcp_answer: str


class Sidecar:
    """AVP payloads beside the graph, keyed by the text they belong to. ``initiator(base)``
    hands the A2A client the cache the graph's first node computed for a prompt (in a KV_CACHE
    session), and leaves the handshake and any other mode to ``base``."""

    def __init__(self, make_kv: Callable[[str], bytes]) -> None:
        self.make_kv = make_kv
        self.payloads: dict[str, bytes] = {}

    def attach(self, text: str) -> None:
        self.payloads[text] = self.make_kv(text)

    def initiator(self, base: Initiator) -> Initiator:
        sidecar = self

        class _Beside:
            def hello(self) -> avp.Message:
                return base.hello()

            def accept(self, msg: avp.Message) -> avp.Mode:
                return base.accept(msg)

            def payload(self, mode: avp.Mode, text: str) -> bytes | None:
                if mode == avp.Mode.KV_CACHE and text in sidecar.payloads:
                    return sidecar.payloads[text]
                return base.payload(mode, text)

        return _Beside()


def kv_maker(model: str, base: Initiator) -> Callable[[str], bytes]:
    """The local agent's KV-cache after reading a text (its context), as an AVP message."""
    if model == "echo":  # the echo agent's made-up model; 800 positions: ~400 KB
        echo = load_responder("echo")
        assert echo.model_id is not None
        model_id = echo.model_id
        return lambda text: avp.encode(echo_kv(model_id, 800, seed=text.encode()))
    from avp_agents.runtime import RuntimeInitiator

    assert isinstance(base, RuntimeInitiator)
    c, steps = base.agent.connector, base.agent.steps
    return lambda text: bytes(c.export_bytes(c.think(text, steps)))


def build_graph(sidecar: Sidecar, initiator: Initiator, a2a_url: str, mcp_url: str,
                host: PayloadHost, report: list[dict[str, Any]]) -> Any:
    async def read(state: State) -> State:
        prompt = f"{state['question']} Answer in one short sentence."
        await asyncio.to_thread(sidecar.attach, prompt)  # the KV-cache stays out of the state
        return {"prompt": prompt}

    async def a2a(state: State) -> State:
        async with A2AClient(a2a_url, host=host) as client:
            out = await client.ask(state["prompt"], sidecar.initiator(initiator))
        report.append({"via": "a2a", "mode": out.mode, "by_reference": out.by_reference,
                       "payload_bytes": out.payload_bytes, "answer": out.answer})
        return {"a2a_answer": out.answer}

    async def mcp(state: State) -> State:
        async with Client(mcp_url, extensions=[client_extension()]) as client:
            params = server_params(client)
            args: dict[str, Any] = {"prompt": state["prompt"]}
            kv = sidecar.payloads.get(state["prompt"])
            if params is not None and kv is not None:
                args["payload"] = await asyncio.to_thread(payload_argument, kv, params,
                                                          host=host)
            result = await client.call_tool("avp_answer", args)
        sc = result.structured_content or {}
        if result.is_error:
            raise RuntimeError(f"avp_answer failed: {sc}")
        report.append({"via": "mcp", "mode": sc.get("mode"), "by_reference":
                       sc.get("byReference"), "payload_bytes": sc.get("payloadBytes"),
                       "answer": sc.get("answer")})
        return {"mcp_answer": str(sc.get("answer"))}

    g = StateGraph(State)
    g.add_node("read", read)
    g.add_node("a2a", a2a)
    g.add_node("mcp", mcp)
    g.add_edge(START, "read")
    g.add_edge("read", "a2a")
    g.add_edge("a2a", "mcp")
    g.add_edge("mcp", END)
    return g.compile()


@contextlib.contextmanager
def local_servers(model: str, max_new_tokens: int) -> Iterator[tuple[str, str]]:
    """An A2A agent and an MCP server on 127.0.0.1, both hosting one responder."""
    responder = load_responder(model, max_new_tokens=max_new_tokens)
    a2a, mcp = A2AServer(responder), MCPServer(responder)
    with avp_http.BackgroundServer(a2a.app, root="") as sa, \
            avp_http.BackgroundServer(mcp.app, root="") as sm:
        a2a.bind(f"http://127.0.0.1:{sa.port}")
        mcp.bind(f"http://127.0.0.1:{sm.port}")
        yield f"http://127.0.0.1:{sa.port}", f"http://127.0.0.1:{sm.port}/mcp"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="'echo', 'tiny-random' or a model")
    ap.add_argument("--question", default="What is the capital of France?")
    ap.add_argument("--a2a", default=None, help="a running A2A agent's URL")
    ap.add_argument("--mcp", default=None, help="a running MCP server's /mcp URL")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args(argv)
    initiator = initiator_for(args.model)
    assert initiator is not None
    sidecar = Sidecar(kv_maker(args.model, initiator))
    report: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        if args.a2a and args.mcp:
            a2a_url, mcp_url = args.a2a, args.mcp
        else:
            a2a_url, mcp_url = stack.enter_context(local_servers(args.model,
                                                                 args.max_new_tokens))
        host = stack.enter_context(PayloadHost())
        graph = build_graph(sidecar, initiator, a2a_url, mcp_url, host, report)
        final = asyncio.run(graph.ainvoke({"question": args.question}))
    for line in report:
        print(f"SIDECAR {json.dumps(line)}", flush=True)
    print(f"STATE {json.dumps(final)}", flush=True)  # text only: no cache in the graph's state
    return 0


if __name__ == "__main__":
    sys.exit(main())
