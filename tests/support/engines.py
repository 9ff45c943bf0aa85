"""The engine matrix: the snippets of schemas/spans-v2.md, run as written in DuckDB, DataFusion,
Polars, ClickHouse (chDB) and Spark against one archive, with no engine-specific settings.

usage: engines.py DOC ROOT TRACE_ID

DOC is schemas/spans-v2.md; ROOT holds the tiers `hot/` and `warm/` (the doc's
`/var/lib/tracesift` is replaced by ROOT, its example trace id by TRACE_ID). Prints one JSON
object: per engine the row count of `spans`, the type it gives `start_time` and `end_time` and
whether that is a timestamp type, the rows the trace lookup returns with their span and parent
ids, and the exact p99 duration per service. The Rust side (tests/support/spine.rs) compares
them across engines and with the input. A missing engine or snippet is an error, never a skip.
"""

import json
import re
import sys

DOC, ROOT, TRACE = sys.argv[1:4]
EXAMPLE_ROOT = "/var/lib/tracesift"
EXAMPLE_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

with open(DOC, encoding="utf-8") as f:
    BLOCKS = dict(re.findall(r"<!-- tested: (\S+) -->\n```\w*\n(.*?)```", f.read(), re.S))


def snippet(name):
    if name not in BLOCKS:
        raise SystemExit(f"{DOC} has no block marked <!-- tested: {name} -->")
    return BLOCKS[name].replace(EXAMPLE_ROOT, ROOT).replace(EXAMPLE_TRACE, TRACE)


def tree(rows):
    """A trace lookup's rows (dicts) as its span ids and its non-null parent ids, hex, sorted."""
    return dict(
        spans=sorted(r["span_id"] for r in rows),
        parents=sorted(r["parent_span_id"] for r in rows if r["parent_span_id"] is not None),
    )


def statements(sql):
    return [s.strip() for s in sql.split(";") if s.strip()]


def duckdb_results():
    import duckdb

    con = duckdb.connect()
    for s in statements(snippet("duckdb/setup")):
        con.execute(s)
    types = con.execute("SELECT typeof(start_time), typeof(end_time) FROM spans LIMIT 1").fetchone()
    cur = con.execute(snippet("duckdb/trace"))
    names = [d[0] for d in cur.description]
    trace = [dict(zip(names, r)) for r in cur.fetchall()]
    return dict(
        rows=con.execute("SELECT count(*) FROM spans").fetchone()[0],
        types=list(types),
        timestamps=all(t == "TIMESTAMP WITH TIME ZONE" for t in types),
        trace=len(trace),
        tree=tree(trace),
        p99=dict(con.execute(snippet("sql/p99")).fetchall()),
    )


def datafusion_results():
    scope = {}
    exec(snippet("datafusion/setup"), scope)
    ctx = scope["ctx"]
    types = ctx.sql(
        "SELECT arrow_typeof(start_time) AS s, arrow_typeof(end_time) AS e FROM spans LIMIT 1"
    ).to_pylist()[0]
    types = [types["s"], types["e"]]
    trace = ctx.sql(snippet("datafusion/trace")).to_pylist()
    return dict(
        rows=ctx.sql("SELECT count(*) AS n FROM spans").to_pylist()[0]["n"],
        types=types,
        timestamps=all(t.startswith("Timestamp(") for t in types),
        trace=len(trace),
        tree=tree(trace),
        p99={r["service_name"]: r["p99_ns"] for r in ctx.sql(snippet("sql/p99")).to_pylist()},
    )


def polars_results():
    import polars as pl

    scope = {}
    exec(snippet("polars/setup"), scope)
    spans = scope["spans"]
    schema = spans.collect_schema()
    types = [schema["start_time"], schema["end_time"]]
    exec(snippet("polars/trace"), scope)
    exec(snippet("polars/p99"), scope)
    return dict(
        rows=spans.select(pl.len()).collect().item(),
        types=[str(t) for t in types],
        timestamps=all(isinstance(t, pl.Datetime) for t in types),
        trace=scope["trace"].height,
        tree=tree(scope["trace"].to_dicts()),
        p99={r["service_name"]: r["p99_ns"] for r in scope["p99"].iter_rows(named=True)},
    )


def chdb_results():
    from chdb import session

    s = session.Session()
    for stmt in statements(snippet("chdb/setup")):
        s.query(stmt)

    def rows(sql):
        out = s.query(sql, "JSONEachRow").bytes().decode()
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    t = rows("SELECT toTypeName(start_time) AS s, toTypeName(end_time) AS e FROM spans LIMIT 1")[0]
    types = [t["s"], t["e"]]
    trace = rows(snippet("chdb/trace"))
    return dict(
        rows=int(rows("SELECT count() AS n FROM spans")[0]["n"]),
        types=types,
        timestamps=all(x.startswith("DateTime64(") for x in types),
        trace=len(trace),
        tree=tree(trace),
        p99={r["service_name"]: int(r["p99_ns"]) for r in rows(snippet("sql/p99"))},
    )


def spark_results():
    from pyspark.sql import SparkSession

    # Local mode, one session for every Spark check; nothing that changes how Parquet is read.
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("tracesift-engine-matrix")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        for stmt in statements(snippet("spark/setup")):
            spark.sql(stmt)
        schema = spark.table("spans").schema
        types = [schema["start_time"].dataType.simpleString(), schema["end_time"].dataType.simpleString()]
        trace = [r.asDict() for r in spark.sql(snippet("spark/trace")).collect()]
        return dict(
            rows=spark.table("spans").count(),
            types=types,
            timestamps=all(t == "timestamp" for t in types),
            trace=len(trace),
            tree=tree(trace),
            p99={r["service_name"]: r["p99_ns"] for r in spark.sql(snippet("sql/p99")).collect()},
        )
    finally:
        spark.stop()


print(
    json.dumps(
        dict(
            duckdb=duckdb_results(),
            datafusion=datafusion_results(),
            polars=polars_results(),
            chdb=chdb_results(),
            spark=spark_results(),
        )
    )
)
