"""Per-request cost in USD, from token usage.

Custom prices (teacher.input/output_cost_per_token) win; otherwise litellm's local price map
(`litellm.cost_per_token`; set LITELLM_LOCAL_MODEL_COST_MAP=True so it never fetches). An
unpriced model costs None per request and the replay reports `priced: false` rather than
pretending it was free. Batch mode uses the map's batch prices, else `batch_discount`.
"""
from __future__ import annotations

import os


class Pricer:
    def __init__(self, model: str, input_cost_per_token: float | None = None, output_cost_per_token: float | None = None,
                 *, batch: bool = False, batch_discount: float = 0.5):
        self.model = model
        self.batch = batch
        self.batch_discount = batch_discount
        self.rates: tuple[float, float] | None = None
        if input_cost_per_token is not None or output_cost_per_token is not None:
            self.rates = (input_cost_per_token or 0.0, output_cost_per_token or 0.0)
            self.source = "custom"
            if batch:
                self.rates = (self.rates[0] * batch_discount, self.rates[1] * batch_discount)
        else:
            self.rates = _map_rates(model, batch, batch_discount)
            self.source = "litellm" if self.rates else "unpriced"

    @property
    def priced(self) -> bool:
        return self.rates is not None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        if self.rates is None:
            return None
        return prompt_tokens * self.rates[0] + completion_tokens * self.rates[1]


def _map_rates(model: str, batch: bool, discount: float) -> tuple[float, float] | None:
    """Per-token (input, output) prices from litellm's map (get_model_info); None if unmapped.

    Read once, not per request: litellm's cost functions cost ~0.1-1 ms of CPU per call, which
    shows at hundreds of requests/s. (Tiered long-context prices are not modelled.)
    """
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    try:
        info = litellm.get_model_info(model)
    except Exception:  # litellm raises a plain Exception for unmapped models
        return None
    inp, out = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if inp is None and out is None:
        return None
    inp, out = float(inp or 0.0), float(out or 0.0)
    if batch:
        b_in, b_out = info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches")
        inp = float(b_in) if b_in is not None else inp * discount
        out = float(b_out) if b_out is not None else out * discount
    return inp, out
