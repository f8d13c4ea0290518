"""What every job returns: the run it logged and its key scores."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from latentscape.tracking.privacy import masked, masked_values

__all__ = ["JobResult"]


@dataclass(frozen=True)
class JobResult:
    kind: str
    run_id: str
    experiment: str
    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    reused: bool = False

    def to_json(self) -> str:
        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            return value

        return json.dumps(masked_values(clean(asdict(self))), default=str)

    def summary(self) -> str:
        lines = [f"{self.kind} run {self.run_id} in experiment {self.experiment!r}"
                 + (" (reused: same inputs already extracted; --force to redo)" if self.reused else "")]
        for name, value in self.scores.items():
            lines.append(f"  {name:<24} {value:.4f}" if isinstance(value, float) else f"  {name:<24} {value}")
        for name, value in self.details.items():
            if isinstance(value, list) and value and isinstance(value[0], dict):
                lines.append(f"  {name}:")
                lines.extend("    " + "  ".join(str(v)[:60] for v in row.values()) for row in value)
            else:
                lines.append(f"  {name:<24} {value}")
        return masked("\n".join(lines))
