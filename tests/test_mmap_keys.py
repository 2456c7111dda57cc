"""Keys of multiprocess files: the fast path for buckets reads what json.loads reads."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.mmap_dict import mmap_key
from prometheus_client.utils import floatToGoString

from tamma_metrics.scrape import mmap_keys

label_names = st.sampled_from(["a", "kind", "la", "le_x", "lz", "model", "provider", "z"])
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
bounds = st.one_of(
    st.sampled_from([0.005, 1.0, 60.0, 1e6, float("inf")]).map(floatToGoString),
    text,
)


@st.composite
def keys(draw) -> tuple[bytes, list]:
    """A key as prometheus_client writes it, or in another valid JSON spelling."""
    metric = draw(st.sampled_from(["tamma_wait_seconds", "jobs", "é_metric"]))
    sample = metric + draw(st.sampled_from(["_bucket", "_sum", "", "_total"]))
    labels = draw(st.dictionaries(label_names, text, max_size=4))
    if draw(st.booleans()):
        labels["le"] = draw(bounds)
    help_text = draw(text)
    spelling = draw(st.sampled_from(["library", "unsorted", "compact", "utf8"]))
    if spelling == "library":
        raw = mmap_key(metric, sample, list(labels), list(labels.values()), help_text)
    else:
        items = list(labels.items())
        random.Random(draw(st.integers(0, 99))).shuffle(items)
        raw = json.dumps(
            [metric, sample, dict(items), help_text],
            sort_keys=spelling != "unsorted",
            separators=(",", ":") if spelling == "compact" else None,
            ensure_ascii=spelling != "utf8",
        )
    return raw.encode(), [metric, sample, labels, help_text]


def expected(parsed: list) -> tuple:
    metric, sample, labels, help_text = parsed
    pairs = tuple(sorted(labels.items()))
    le = without = None
    if "le" in labels:
        without = tuple(pair for pair in pairs if pair[0] != "le")
        try:
            le = float(labels["le"])
        except ValueError:
            le = None
    return metric, sample, pairs, help_text, le, without


def fields(key: mmap_keys.Key) -> tuple:
    return key.metric_name, key.name, key.labels, key.help, key.le, key.without_le


@given(st.lists(keys(), min_size=1, max_size=30))
@settings(max_examples=300, deadline=None)
def test_every_key_reads_as_json_loads_reads_it(batch):
    mmap_keys.clear()
    raws = [raw for raw, _ in batch]
    for key, (raw, parsed) in zip(mmap_keys.parse(raws, {}), batch, strict=True):
        # A bucket read through its series' identity keeps only that identity.
        assert key.digest == mmap_keys.digest(raw) or (
            key.digest is None and key.identity is not None
        )
        got, want = fields(key), expected(parsed)
        assert got[:4] == want[:4]
        assert got[5] == want[5]
        assert got[4] == want[4] or (got[4] != got[4] and want[4] != want[4])  # NaN


def test_buckets_of_one_series_take_the_fast_path_and_share_their_label_set():
    mmap_keys.clear()
    raws = [
        mmap_key("wait", "wait_bucket", ["model", "a", "le"], ["m", "x", bound], "h").encode()
        for bound in ("0.5", "1.0", "+Inf")
    ]
    identities: dict = {}
    fast = [mmap_keys._bucket(raw, identities) for raw in raws]
    assert all(key is not None for key in fast)
    assert len(identities) == 1
    assert fast[0].without_le is fast[2].without_le == (("a", "x"), ("model", "m"))
    assert fast[2].labels == (("a", "x"), ("le", "+Inf"), ("model", "m"))
    assert fast[2].le == float("inf")


@pytest.mark.parametrize(
    "raw",
    [
        # The le pair where sorted JSON would not put it: json.loads decides.
        b'["w", "w_bucket", {"model": "m", "le": "1.0"}, "h"]',
        b'["w", "w_bucket", {"le": "1.0", "le": "2.0"}, "h"]',
        b'["w", "w_bucket", {"le":"1.0"}, "h"]',
    ],
)
def test_keys_off_the_canonical_form_are_read_by_json(raw):
    mmap_keys.clear()
    (key,) = mmap_keys.parse([raw], {})
    assert key.digest == mmap_keys.digest(raw)
    assert fields(key) == expected(json.loads(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'["w", "w_bucket", {"le": "1.0"}',  # truncated
        b'["w", "w_bucket", {"le": 1.0}, "h"]',  # a number
        b'["w", "w_bucket", {"le": "\\ud800"}, "h"]',  # a lone surrogate
        b'["", "x", {}, "h"]',  # no metric name
        b'["w", "w_bucket", ["le"], "h"]',  # labels not an object
    ],
)
def test_broken_keys_are_refused(raw):
    with pytest.raises(mmap_keys.BrokenKey):
        mmap_keys.parse([raw], {})
