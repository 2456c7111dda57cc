"""The encoder writes what prometheus_client's encoders write, for any family a
collector may yield: every type, units, timestamps, exemplars, _created samples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.samples import Exemplar, Timestamp

from tamma_metrics.scrape import encoder

TYPES = ["counter", "gauge", "histogram", "summary", "info", "stateset", "gaugehistogram",
         "unknown"]  # fmt: skip
ESCAPINGS = ["underscores", "allow-utf-8", "dots", "values"]

names = st.sampled_from(["jobs", "wait_seconds", "a:b", "tamma_x"])
label_values = st.text(st.characters(blacklist_categories=("Cs",)), max_size=5)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.sampled_from([0.0, -0.0, 1e21, 5e-324, 123456789.0]),
)


class _OneShot:
    def __init__(self, metrics):
        self.metrics = metrics

    def collect(self):
        return self.metrics


@st.composite
def metrics(draw) -> Metric:
    typ = draw(st.sampled_from(TYPES))
    name = draw(names)
    unit = draw(st.sampled_from(["", "seconds"])) if typ in ("gauge", "unknown") else ""
    metric = Metric(name, draw(st.text(max_size=8)), typ, unit)
    suffixes = {
        "counter": ["_total", "_created"],
        "histogram": ["_bucket", "_sum", "_count", "_created"],
        "summary": ["_sum", "_count", "_created"],
        "gaugehistogram": ["_bucket", "_gsum", "_gcount"],
        "info": ["_info"],
    }.get(typ, [""])
    for _ in range(draw(st.integers(0, 4))):
        suffix = draw(st.sampled_from(suffixes))
        labels = draw(st.dictionaries(st.sampled_from(["a", "le", "z", "model"]), label_values,
                                      max_size=3))  # fmt: skip
        timestamp = draw(st.one_of(st.none(), st.floats(0, 2e9), st.builds(Timestamp,
                         st.integers(0, 2**31), st.integers(0, 10**9 - 1))))  # fmt: skip
        exemplar = None
        if draw(st.booleans()) and (
            (typ == "counter" and suffix == "_total") or suffix == "_bucket"
        ):
            exemplar = Exemplar(
                draw(st.dictionaries(st.sampled_from(["trace_id"]), label_values, max_size=1)),
                draw(st.floats(allow_nan=False, allow_infinity=False)),
                draw(st.one_of(st.none(), st.floats(0, 2e9))),
            )
        metric.add_sample(name + suffix, labels, draw(values), timestamp, exemplar)
    return metric


@given(family=metrics(), escaping=st.sampled_from(ESCAPINGS))
@settings(max_examples=500, deadline=None)
def test_any_family_encodes_as_the_library_encodes_it(family, escaping):
    try:
        theirs = generate_latest(_OneShot([family]), escaping=escaping)
    except Exception:  # the library refuses it (a timestamp it cannot print, ...)
        return
    ours = encoder.encode_metrics(encoder.Format(False, escaping), [family])
    assert ours == theirs
    for version in ("1.0.0", "2.0.0"):
        try:
            theirs = om_exposition.generate_latest(
                _OneShot([family]), escaping=escaping, version=version
            )
        except Exception:
            continue
        fmt = encoder.Format(True, escaping, version)
        assert encoder.encode_metrics(fmt, [family]) + encoder.EOF == theirs


@pytest.mark.parametrize(
    ("accept", "openmetrics", "escaping"),
    [
        ("", False, "underscores"),
        ("text/plain;version=0.0.4", False, "underscores"),
        ("text/plain;version=1.0.0;escaping=allow-utf-8", False, "allow-utf-8"),
        ("application/openmetrics-text", True, "underscores"),
        ("application/openmetrics-text;version=1.0.0;escaping=dots", True, "dots"),
        ("application/json", False, "underscores"),
    ],
)
def test_negotiation_is_prometheus_clients(accept, openmetrics, escaping):
    fmt, content_type = encoder.negotiate(accept)
    assert (fmt.openmetrics, fmt.escaping) == (openmetrics, escaping)
    from prometheus_client.exposition import choose_encoder

    assert content_type == choose_encoder(accept)[1]


def test_values_render_like_go():
    assert [encoder.format_value(v) for v in (1e21, 123456789.0, -0.0, math.nan, 5)] == [
        "1e+21",
        "1.23456789e+08",
        "-0.0",
        "NaN",
        "5.0",
    ]
