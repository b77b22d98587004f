"""Read rltrace dataset files with the readers trainers use, for crates/rltrace/tests/datasets.rs.

    python read_datasets.py SPEC.json OUT.json

SPEC is a list of {"path", "shape", "format", "text"}. Each file is read with pyarrow
(pyarrow.parquet / pyarrow.json) and with Hugging Face `datasets` (from_parquet / "json"); the
column names and Arrow types that TRL's dataset types need are checked here (an AssertionError
names the file and the column), and the rows `datasets` read are written to OUT for the Rust
test to compare with rewards computed by hand. Parquet key-value metadata is reported too.
"""

import json
import sys

import datasets
import pyarrow as pa
import pyarrow.json as paj
import pyarrow.parquet as pq

datasets.disable_progress_bars()
datasets.logging.set_verbosity_error()

MESSAGES = "messages"


def kind(t):
    """The column kind a TRL dataset type needs, from an Arrow type."""
    if getattr(t, "extension_name", None) == "arrow.json":  # datasets' Json feature
        return "json"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit},{t.tz}]"
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        v = t.value_type
        if pa.types.is_struct(v):
            names = sorted(v.field(i).name for i in range(v.num_fields))
            types = {kind(v.field(i).type) for i in range(v.num_fields)}
            if names == ["content", "role"] and types == {"string"}:
                return MESSAGES
            return "list<struct>"
        return f"list<{kind(v)}>"
    if pa.types.is_struct(t):
        return "struct"
    return str(t)


def want_columns(shape, text, fmt):
    """Columns and kinds: TRL's dataset types (conversational or standard) and section 7."""
    msg = "string" if text else MESSAGES
    if shape == "triplets":
        ts = "timestamp[us,UTC]" if fmt == "parquet" else "string"
        nested = ("json", "string") if fmt == "parquet" else ("struct", "json")
        return {
            "triplet_id": "string", "sequence_id": "string", "sequence_index": "int", "timestamp_utc": ts,
            "state": nested, "action": nested, "reward": "float", "reward_sources": nested,
            "reward_source": "string", "reward_assigned_at": ts, "propensity": None,
            "sampling_probability": None, "trace_id": "string", "span_id": "string",
        }
    if shape == "agentlightning":
        nested = ("json", "string") if fmt == "parquet" else ("struct", "json")
        return {"prompt": nested, "response": nested, "reward": "float", "metadata": nested}
    if shape == "trl-sft":
        return {"text": "string"} if text else {"messages": MESSAGES}
    if shape == "trl-prompt-completion":
        return {"prompt": msg, "completion": msg, "reward": "float"}
    if shape == "trl-kto":
        return {"prompt": msg, "completion": msg, "label": "bool"}
    if shape == "trl-dpo":
        return {"prompt": msg, "chosen": msg, "rejected": msg}
    if shape == "trl-stepwise":
        return {"prompt": msg, "completions": "list<string>" if text else f"list<{MESSAGES}>", "labels": "list<bool>"}
    raise AssertionError(f"unknown shape {shape}")


def check_schema(where, schema, want):
    names = list(schema.names)
    assert names == list(want), f"{where}: columns {names}, want {list(want)}"
    for name, k in want.items():
        got = kind(schema.field(name).type)
        if k is None:  # an all-null column in JSONL is typed null; in Parquet a double
            assert got in ("float", "null"), f"{where}: column {name} is {schema.field(name).type}"
            continue
        ok = got in k if isinstance(k, tuple) else got == k
        assert ok, f"{where}: column {name} is {schema.field(name).type} ({got}), want {k}"


def is_conversational(example):
    """TRL's own test (trl.data_utils.is_conversational), restated: a supported key whose value
    is a list of dicts with role and content."""
    for key in ["prompt", "chosen", "rejected", "completion", "messages"]:
        if key in example:
            v = example[key]
            return isinstance(v, list) and len(v) > 0 and isinstance(v[0], dict) and "role" in v[0] and "content" in v[0]
    return False


def jsonable(v):
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, (bytes, bytearray)):
        v = v.decode()
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v


def read(spec):
    path, shape, fmt, text = spec["path"], spec["shape"], spec["format"], spec.get("text", False)
    want = want_columns(shape, text, fmt)
    out = {"path": path}
    if fmt == "parquet":
        table = pq.read_table(path)
        meta = pq.read_metadata(path)
        kv = meta.metadata or {}
        out["metadata"] = {k.decode(): v.decode() for k, v in kv.items()}
        out["row_groups"] = meta.num_row_groups
        out["compression"] = sorted({meta.row_group(i).column(j).compression for i in range(meta.num_row_groups) for j in range(meta.num_columns)})
        out["json_columns"] = [meta.schema.column(j).name for j in range(meta.num_columns) if str(meta.schema.column(j).logical_type) == "JSON"]
        ds = datasets.Dataset.from_parquet(path)
    else:
        table = paj.read_json(path)
        ds = datasets.load_dataset("json", data_files=path, split="train")
    if table.num_rows > 0:
        check_schema(f"{path} (pyarrow)", table.schema, want)
        check_schema(f"{path} (datasets)", ds.data.schema, want)
    assert ds.num_rows == table.num_rows, f"{path}: datasets read {ds.num_rows} rows, pyarrow {table.num_rows}"
    rows = ds.to_list()
    if shape.startswith("trl-") and rows:
        conv = [is_conversational(r) for r in rows]
        if text:
            assert not any(conv), f"{path}: text=true rows are in TRL's standard form"
        else:
            assert all(conv), f"{path}: rows are conversational for TRL"
    out["num_rows"] = table.num_rows
    out["columns"] = list(table.schema.names)
    out["rows"] = jsonable(rows)
    out["pyarrow_rows"] = jsonable(table.to_pylist())
    return out


def main():
    specs = json.load(open(sys.argv[1]))
    results = [read(s) for s in specs]
    with open(sys.argv[2], "w") as f:
        json.dump(results, f, default=str)


if __name__ == "__main__":
    main()
