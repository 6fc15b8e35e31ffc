"""The console's server-side HTML: escaped, readable without JavaScript, charts as inert data."""

from __future__ import annotations

import json
import re

from appliance.console import render


def test_chart_data_cannot_close_its_script_block_and_names_are_escaped():
    evil = '</script><script>alert(1)</script>'
    html = render.chart("c", "t <b>", {evil: [[1.0, 2.0], [2.0, 3.0]]}, " %")
    assert html.count("</script>") == 1  # only the block's own end
    assert "<script>alert" not in html and "&lt;/script&gt;" in html  # the last-value list, escaped
    block = re.search(r'<script type="application/json" class="chart-data">(.*)</script>', html).group(1)
    assert json.loads(block)["series"][evil] == [[1.0, 2.0], [2.0, 3.0]]
    assert 'data-points="2"' in html and "t &lt;b&gt;" in html


def test_a_page_without_javascript_still_shows_tables_and_last_values():
    view = {"page": "keys", "user": "bob", "role": "user", "window_s": 3600.0,
            "keys": [{"name": "k<1>", "key_id": "abc", "owner": "bob", "status": "active", "models": [],
                      "rpm": None, "tokens_per_day": None, "expires_at": None,
                      "usage": {"requests": 4, "prompt_tokens": 1, "completion_tokens": 2, "denied": 0,
                                "tokens_today": 3, "last_used_at": None}}],
            "history": {"gw.key.abc.requests": [[1.0, 1.0], [2.0, 4.0]]}}
    html = render.page("keys", view, {"user": "bob", "role": "user"})
    assert "k&lt;1&gt;" in html and "<td>4</td>" in html
    assert "<li>k&lt;1&gt;: 180.0</li>" in html  # the chart's last value (3 requests in 1 s), without scripts
    assert 'href="?window=day"' in html and "<strong>last hour</strong>" in html
    assert 'id="nav-overview"' not in html and 'id="nav-keys"' in html  # a user's menu
    assert 'src="/static/plotly.min.js' in html and "https://" not in html  # nothing from a CDN


def test_counters_become_rates_and_a_reset_starts_from_zero():
    assert render.rate([[0, 0], [10, 5], [20, 5], [30, 2]]) == [[10, 0.5], [20, 0.0], [30, 0.2]]
    assert render.rate([[0, 0], [30, 6]], per_s=60) == [[30, 12.0]]
    assert render.rate([[5, 1]]) == [] and render.rate([[5, 1], [5, 2]]) == []


def test_a_releases_changes_read_as_short_escaped_lines():
    c = {"against": 3, "from_version": "1.0.0", "to_version": "1.1.0", "added": ["llm-<x>"], "removed": ["old"],
         "images": [{"service": "gateway", "from_image": "gw:a", "to_image": "gw:b"}], "reconfigured": ["chat"],
         "models_added": ["m1"], "models_removed": []}
    assert render.changes(c).split("<br>") == [
        "version 1.0.0 → 1.1.0", "+ llm-&lt;x&gt;", "− old",
        "gateway: image <code>gw:a</code> → <code>gw:b</code>", "chat: reconfigured", "serves m1"]
    same = {"against": 3, "from_version": "1.1.0", "to_version": "1.1.0"}
    assert render.changes(same) == "same as release 3"
    assert render.changes({"against": None, "to_version": "1.0.0"}) == "first install (1.0.0)"
