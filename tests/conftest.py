"""Session fixtures shared by several test modules: the bundled study and its default simulation
(7 s to build; built once)."""

from __future__ import annotations

import pytest

from impactstudy.simulate import Simulation, simulate
from impactstudy.study import Study, bundled_study, load

#: the bundled study's default seed (simulation.toml)
WECHAT_SEED = 20181001


@pytest.fixture(scope="session")
def wechat_study() -> Study:
    return load(bundled_study())


@pytest.fixture(scope="session")
def wechat_simulation(wechat_study: Study) -> Simulation:
    return simulate(wechat_study, WECHAT_SEED)


# --- report: PDF and browser tests (tests/test_report_pdf.py, tests/test_report_browser.py) ---

#: Debian's Chromium (apt package chromium); Playwright's own browsers are never downloaded
CHROMIUM = "/usr/bin/chromium"
#: no DNS lookups, no QUIC, no pings: Chromium otherwise resolves Google's update and account
#: hosts at every start (docs: setup-notes §5); Playwright adds its own flags (no sandbox,
#: no background networking, no component update), which a second --disable-features would undo
CHROMIUM_ARGS = [
    "--disable-quic",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]

#: a small report of the same shape as the real one, for when impactstudy.report.render_html
#: does not exist yet: Chinese headings, a table of contents with anchors, a wide table in its
#: own scroll container, and an inline SVG chart
SAMPLE_REPORT_HTML = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>微信就业影响力报告（2019）</title>
<style>
body { font-family: "Noto Sans CJK SC", sans-serif; margin: 0 auto; max-width: 60rem;
       padding: 0 1rem; line-height: 1.6; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: .2rem .5rem; }
figure.chart svg { width: 100%; max-width: 36rem; height: auto; }
</style></head>
<body>
<h1>微信就业影响力报告</h1>
<nav class="toc"><ol>
<li><a href="#preface">前言</a></li><li><a href="#jobs">就业篇</a></li>
<li><a href="#economy">经济与社会篇</a></li><li><a href="#industry">产业篇</a></li>
<li><a href="#appendix">附录</a></li></ol></nav>
<section id="preface"><h2>前言</h2>
<p>2018 年微信带动就业机会 2235 万个，带动信息消费 2402 亿元，带动传统消费 4198 亿元。</p>
</section>
<section id="jobs"><h2>就业篇</h2>
<div class="table-wrap"><table>
<thead><tr><th>指标</th><th>单位</th><th>中位数</th><th>5–95% 区间</th><th>报告值</th>
<th>来源</th><th>样本量</th><th>设计效应</th></tr></thead>
<tbody>
<tr><td>带动就业机会</td><td>万个</td><td>2231</td><td>2105–2364</td><td>2235</td>
<td>模型 caict</td><td>11576</td><td>1.84</td></tr>
<tr><td>信息消费</td><td>亿元</td><td>2398</td><td>2287–2519</td><td>2402</td>
<td>模型 caict</td><td>11576</td><td>1.62</td></tr>
</tbody></table></div>
<figure class="chart">
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 220" width="400" height="220"
 role="img" aria-label="带动就业机会">
<rect x="50" y="40" width="80" height="150" fill="#07c160"/>
<rect x="170" y="90" width="80" height="100" fill="#576b95"/>
<rect x="290" y="120" width="80" height="70" fill="#fa9d3b"/>
<text x="90" y="210" text-anchor="middle" font-size="13">直接就业</text>
<text x="210" y="210" text-anchor="middle" font-size="13">间接就业</text>
<text x="330" y="210" text-anchor="middle" font-size="13">诱发就业</text>
</svg><figcaption>图 1 微信带动的就业机会（万个）</figcaption></figure>
</section>
<section id="economy"><h2>经济与社会篇</h2><p>信息消费占比 4.8%，传统消费增长 26%。</p></section>
<section id="industry"><h2>产业篇</h2><p>小程序与公众号带动的产业生态。</p></section>
<section id="appendix"><h2>附录</h2><p>方法说明：问卷调查、加权与投入产出模型。</p></section>
</body></html>
"""


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, object]) -> dict[str, object]:
    """pytest-playwright's launch settings with Debian's Chromium and no network lookups."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def report_html(request: pytest.FixtureRequest) -> str:
    """The report's HTML (zh): the real report built from the default simulation (the impact
    model on 2,000 draws) when ``impactstudy.report.render_html`` exists, else
    :data:`SAMPLE_REPORT_HTML`."""
    try:
        from impactstudy.report import render_html
    except ImportError:
        return SAMPLE_REPORT_HTML
    from impactstudy.estimate import estimate_all
    from impactstudy.impact import audit_outputs, run_presets
    from impactstudy.quality import screen
    from impactstudy.report.inputs import ReportInputs
    from impactstudy.weighting import weight

    study: Study = request.getfixturevalue("wechat_study")
    sim: Simulation = request.getfixturevalue("wechat_simulation")
    valid = screen(sim.responses, study, audit=False)
    weighted = weight(valid, study)
    estimates = estimate_all(weighted, study)
    runs = run_presets(study, estimates, draws=2000)
    inputs = ReportInputs(
        study=study,
        valid=valid,
        weighted=weighted,
        estimates=estimates,
        runs=runs,
        audit=audit_outputs(runs["caict"], study),
        truth=sim.truth,
        seed=WECHAT_SEED,
    )
    html: str = render_html(inputs, "zh")
    return html
