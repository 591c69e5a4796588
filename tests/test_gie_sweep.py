"""GIE's strength sweep (bench.gie_sweep): counts per setting and |w|, the plot, the report's section."""
import pytest

import erasekit
from erasekit.bench.gie_sweep import load_sweep, plot_name, run_sweep, sweep_lines
from erasekit.bench.report import sweep_section


@pytest.fixture(scope="module")
def shapeworld():
    return erasekit.load_pipeline(None)


def test_sweep_counts_plot_and_report_section(shapeworld, tmp_path):
    settings = {"projection, all steps": {"inhibitor": "projection", "cross_fraction": 1.0}}
    results = run_sweep(shapeworld, ["triangle"], tmp_path, seeds=1, strengths=(0.0, 2.0), settings=settings,
                        progress=False)
    original, erased = results["concepts"]["triangle"]["projection, all steps"]
    assert original["target"] == [15, 15] and original["preserve"] == [5, 5]  # 5 prompts per form and siblings
    assert erased["target"][0] == 0 and erased["preserve"] == [5, 5]
    assert (tmp_path / plot_name("triangle")).is_file() and load_sweep(tmp_path) == results
    assert plot_name("triangle") in sweep_section(tmp_path)
    assert sweep_lines(results)[1].startswith("| triangle | projection, all steps | 2 | 0.0% [0.0, ")
    assert sweep_section(tmp_path / "nowhere") == ""
