"""Validate rltrace's `agentlightning` export rows against Agent Lightning's own Triplet model,
for crates/rltrace/tests/datasets.rs.

    python validate_agentlightning.py FILE.jsonl FILE.parquet OUT.json

Every row of both files must have exactly the Triplet model's fields and pass
`Triplet.model_validate`; the validated triplets (model_dump) are written to OUT for the Rust
test to compare with rewards computed by hand.
"""

import json
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pyarrow.parquet as pq  # noqa: E402
from agentlightning.types import Triplet  # noqa: E402

FIELDS = set(Triplet.model_fields)


def validate(rows, where):
    out = []
    for i, row in enumerate(rows):
        assert set(row) == FIELDS, f"{where} row {i}: fields {sorted(row)}, Triplet has {sorted(FIELDS)}"
        t = Triplet.model_validate(row)
        assert t.reward is None or isinstance(t.reward, float), f"{where} row {i}: reward {t.reward!r}"
        assert isinstance(t.metadata, dict), f"{where} row {i}: metadata"
        out.append(t.model_dump())
    return out


def main():
    jsonl, parquet, report = sys.argv[1:4]
    with open(jsonl) as f:
        from_jsonl = validate([json.loads(line) for line in f if line.strip()], jsonl)
    table = pq.read_table(parquet)
    rows = []
    for r in table.to_pylist():
        # Nested values are JSON text columns (the Parquet JSON logical type).
        rows.append({k: (json.loads(v) if k in ("prompt", "response", "metadata") else v) for k, v in r.items()})
    from_parquet = validate(rows, parquet)
    assert from_jsonl == from_parquet, "the JSONL and Parquet files hold the same triplets"
    with open(report, "w") as f:
        json.dump(from_jsonl, f)


if __name__ == "__main__":
    main()
