"""`celrec eval` end to end on a small generated CSV, and on ML-100K when present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cli.evaluation.cli import main
from cli.main import main as celrec_main

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _preset(tmp: Path, **fields: object) -> str:
    path = tmp / "preset.json"
    path.write_text(json.dumps(fields))
    return str(path)


def _csv(path: Path, binary: bool) -> Path:
    gen = torch.Generator().manual_seed(0)
    rows = ["user,item,value,timestamp"]
    for k in range(600):
        u, i = int(torch.randint(30, (1,), generator=gen)), int(torch.randint(40, (1,),
                                                                               generator=gen))
        value = float((u % 2) == (i % 2)) if binary else float(1 + (u + i) % 5)
        rows.append(f"u{u},i{i},{value:g},{k}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize("protocol", ["random", "stream"])
def test_json_report_for_ratings(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 protocol: str) -> None:
    data = _csv(tmp_path / "r.csv", binary=False)
    code = main(["--data", str(data), "--format", "csv", "--protocol", protocol, "--dim", "4",
                 "--clusters", "5", "--methods", "full,hash,dhash,cel", "--json", "--quiet",
                 "--device", "cpu", "--preset",
                 _preset(tmp_path, epochs=2, extra_rows=1, stream_extra_rows=1)])
    assert code == 0
    out = capsys.readouterr()
    assert "warning" not in out.err
    report = json.loads(out.out)
    assert report["protocol"] == protocol and len(report["results"]) == 4
    for r in report["results"]:
        assert r["rmse"] > 0 and r["auc"] is None and r["logloss"] is None
        assert set(r["buckets"]["item"]) == {"0", "1-5", "6-20", ">20"}
        assert sum(b["n"] for b in r["buckets"]["user"].values()) == (
            120 if protocol == "random" else 600)
    full, hashed, _, cel = report["results"]
    assert full["compression_ratio"] == 1.0 and cel["compression_ratio"] > 1.0
    assert hashed["memory_bytes"] <= cel["memory_bytes"]


def test_warns_when_cel_outweighs_full(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    # --dim 4: a full row is 5 floats; the default 5 extra rows + own scalars cost more
    data = _csv(tmp_path / "r.csv", binary=False)
    assert main(["--data", str(data), "--format", "csv", "--dim", "4", "--clusters", "5",
                 "--methods", "full,cel", "--json", "--quiet", "--device", "cpu",
                 "--preset", _preset(tmp_path, epochs=1)]) == 0
    out = capsys.readouterr()
    cel = json.loads(out.out)["results"][1]
    assert cel["compression_ratio"] < 1.0 and "lower the preset's extra_rows" in out.err


def test_binary_labels_report_auc_and_logloss(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path / "b.csv", binary=True)
    assert celrec_main(["eval", "--data", str(data), "--format", "csv", "--model", "deepfm",
                        "--dim", "4", "--clusters", "4", "--side", "both", "--methods", "cel",
                        "--json", "--quiet", "--device", "cpu",
                        "--preset", _preset(tmp_path, epochs=2)]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert 0 <= result["auc"] <= 1 and result["logloss"] > 0 and result["rmse"] is None


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path / "none"), "--methods", "cel", "--quiet"]) == 2
    assert main(["--data", "x", "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_movielens_100k_random_protocol_quick(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    udata = DATA / "movielens-100k" / "ml-100k" / "u.data"
    if not udata.is_file():
        pytest.skip(f"ML-100K not found at {udata} (shared data folder absent)")
    assert main(["--data", str(udata), "--protocol", "random", "--methods", "full,cel",
                 "--json", "--quiet", "--device", "cpu",
                 "--preset", _preset(tmp_path, epochs=1)]) == 0
    report = json.loads(capsys.readouterr().out)
    full, cel = report["results"]
    assert 0.8 < full["rmse"] < 1.3 and 0.8 < cel["rmse"] < 1.3
    assert cel["table_compression_ratio"] > 30  # 50 rows vs one per item
    # + own biases, scales and the 5 extra rows (an assignment byte and a weight per item each)
    assert 6 < cel["compression_ratio"] < cel["table_compression_ratio"]
    assert sum(b["n"] for b in cel["buckets"]["item"].values()) == 20_000


def test_stream_protocol_runs_the_trainers_learner_as_served(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--methods celrec``: the trainer's learner and defaults, scored through the served
    model; it learns the parity pattern of the generated stream (second half above 0.5)."""
    data = _csv(tmp_path / "b.csv", binary=True)
    code = main(["--data", str(data), "--format", "csv", "--protocol", "stream",
                 "--methods", "celrec", "--json", "--quiet", "--device", "cpu"])
    assert code == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["method"] == "celrec" and 0 < result["logloss"] < 1
    assert result["auc"] > 0.6  # progressive AUC over the whole stream
    assert result["compression_ratio"] > 1.0
    assert sum(b["n"] for b in result["buckets"]["item"].values()) == 600
    assert main(["--data", str(data), "--format", "csv", "--protocol", "random",
                 "--methods", "celrec", "--json", "--quiet", "--device", "cpu"]) != 0
    # the method's old name still runs it, with a note
    assert main(["--data", str(data), "--format", "csv", "--protocol", "stream",
                 "--methods", "cel-online", "--json", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["results"][0]["auc"] == result["auc"]
    assert "now called 'celrec'" in out.err


def test_the_stream_protocol_scores_ratings_as_served_without_clipping(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first chunk is scored before anything is learnt (0, as served); clipping it to the
    stream's rating range would use what the stream has not shown yet."""
    data = _csv(tmp_path / "r.csv", binary=False)  # ratings 1-5, three chunks
    assert main(["--data", str(data), "--format", "csv", "--protocol", "stream",
                 "--methods", "celrec", "--json", "--quiet", "--device", "cpu"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    values = [float(line.split(",")[2]) for line in data.read_text().split()[1:201]]
    first_chunk_mse = sum(v * v for v in values) / len(values)  # against predictions of 0
    assert result["rmse"] ** 2 * 600 >= first_chunk_mse * 200


def test_the_biases_only_floor_is_a_method(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = _csv(tmp_path / "r.csv", binary=False)
    assert main(["--data", str(data), "--format", "csv", "--dim", "4", "--methods", "bias,full",
                 "--json", "--quiet", "--device", "cpu", "--preset", _preset(tmp_path, epochs=2)
                 ]) == 0
    bias, full = json.loads(capsys.readouterr().out)["results"]
    assert bias["rmse"] > 0 and bias["memory_bytes"] * 5 == full["memory_bytes"]  # width 1
