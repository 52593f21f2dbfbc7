"""Per-key spend limits that hold under concurrency: reserve a request's worst case before calling upstream,
settle to what it really cost afterwards.

A key is admitted while ``spent + reserved < budget``; its request then reserves its worst case — the prompt's
upper-bound count (`routing.text_token_bound`: a count the client cannot make small; or, when that fits what is left
of the budget, the prompt's byte bound, which needs no tokenizer and is never below it) × input price + every choice
(``n``) × the output tokens it may generate × output price, for the priciest LLM it may be sent to. However many
requests race, everything admitted was reserved against a budget that still had room, so

    spent ≤ budget + one request's reservation

as long as each request costs at most its reservation — true when ``max_tokens`` bounds the output (requests
without it reserve the LLM's ``max_output_tokens`` or ``server.reserve_output_tokens``; a request that costs more is
logged and counted in ``radialrouter_reservation_exceeded_total``). All methods run on the event loop without
awaiting, so a check and its reservation are atomic.
"""

from __future__ import annotations

from dataclasses import dataclass

from radialrouter.serve.config import LLMConfig, ServeConfig
from radialrouter.serve.routing import RequestError


def cost_usd(llm: LLMConfig, prompt_tokens: float, output_tokens: float) -> float:
    """Price-table cost (prices are USD per million tokens)."""
    return (prompt_tokens * llm.input_price + output_tokens * llm.output_price) / 1e6


@dataclass
class Reservation:
    client: str
    amount: float
    settled: bool = False
    id: str | None = None  # the reservation's row in the database (PostgreSQL budgets)


class Budgets:
    """Spend and outstanding reservations per client id; limits from ``auth.keys[].budget_usd``."""

    def __init__(self, config: ServeConfig, spent: dict[str, float] | None = None) -> None:
        self.limits = {k.id: k.budget_usd for k in config.auth.keys if k.budget_usd is not None}
        self.spent: dict[str, float] = dict(spent or {})
        self.reserved: dict[str, float] = {}
        self.default_output = config.server.reserve_output_tokens

    def check(self, client: str) -> None:
        """Refuse a key whose budget is used up by spend and reservations (429 ``budget_exceeded``)."""
        limit = self.limits.get(client)
        if limit is not None and self.spent.get(client, 0.0) + self.reserved.get(client, 0.0) >= limit:
            raise RequestError(f"Budget of {limit} USD for client {client!r} is spent (or reserved by requests in "
                               "flight)", status=429, code="budget_exceeded")

    def room(self, client: str) -> float:
        """What is left of ``client``'s budget after its spend and the reservations in flight (inf: no budget)."""
        limit = self.limits.get(client)
        return float("inf") if limit is None else limit - self.spent.get(client, 0.0) - self.reserved.get(client, 0.0)

    def output_tokens(self, llm: LLMConfig, max_output: int) -> int:
        """Output tokens one choice may have on ``llm``: ``max_output`` (the request's), capped by the LLM's own
        maximum; without one, the LLM's maximum or the configured default."""
        cap = llm.max_output_tokens
        if max_output:
            return min(max_output, cap) if cap else max_output
        return cap or self.default_output

    def worst_case(self, llm: LLMConfig, prompt_tokens: int, max_output: int, choices: int = 1) -> float:
        """The most a request can cost on ``llm``: ``prompt_tokens`` (already an upper bound) once, and every
        choice's output."""
        return cost_usd(llm, prompt_tokens, choices * self.output_tokens(llm, max_output))

    def reserve(self, client: str, amount: float) -> Reservation:
        self.check(client)
        self.reserved[client] = self.reserved.get(client, 0.0) + amount
        return Reservation(client, amount)

    async def areserve(self, client: str, amount: float) -> Reservation:
        """`reserve` for the server (PostgreSQL budgets need a database round trip here)."""
        return self.reserve(client, amount)

    def settle(self, reservation: Reservation | None, client: str, cost: float | None) -> bool:
        """Release the reservation and book the real cost; True when the cost exceeded what was reserved."""
        if reservation is not None and not reservation.settled:
            reservation.settled = True
            left = self.reserved.get(client, 0.0) - reservation.amount
            self.reserved[client] = left if left > 1e-15 else 0.0
        if cost:
            self.spent[client] = self.spent.get(client, 0.0) + cost
        return reservation is not None and cost is not None and cost > reservation.amount * (1 + 1e-9)
