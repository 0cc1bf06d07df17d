"""Dataset loaders and protocols on small files written by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli.evaluation.datasets import DatasetError, load
from cli.evaluation.protocols import prepare


def test_movielens_tab_and_double_colon(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t4\t100\n2\t10\t3\t50\n")
    (tmp_path / "ratings.dat").write_text("1::10::4::100\n2::11::5::50\n")
    tab, colon = load(tmp_path / "u.data", "movielens"), load(tmp_path / "ratings.dat",
                                                               "movielens")
    assert tab.users == ["1", "2"] and tab.values.tolist() == [4.0, 3.0]
    assert colon.items == ["10", "11"] and colon.times.tolist() == [100, 50]


def test_csv_with_scenario_and_userbehavior(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("user,item,value,timestamp,scenario\nu,i,1,5,s1\nv,i,0,3,s2\n")
    raw = load(tmp_path / "a.csv", "csv")
    assert raw.scenarios == ["s1", "s2"] and raw.times.tolist() == [5, 3]
    (tmp_path / "ub.csv").write_text("1,7,3,pv,1511544070\n1,8,3,buy,1511544080\n2,7,3,p")
    ub = load(tmp_path / "ub.csv", "userbehavior")
    assert len(ub) == 2 and ub.implicit  # the truncated last line is dropped


def test_bad_files_raise_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        load(tmp_path / "missing", "movielens")
    (tmp_path / "b.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError):
        load(tmp_path / "b.csv", "csv")


def test_random_split_stream_order_and_negatives(tmp_path: Path) -> None:
    lines = [f"{u},{i},3,pv,{1000 - u * 10 - i}" for u in range(10) for i in range(5)]
    (tmp_path / "ub.csv").write_text("\n".join(lines) + "\n")
    prep = prepare(str(tmp_path / "ub.csv"), "userbehavior", "random", seed=0, negatives=2)
    assert prep.task == "binary" and len(prep.train) == 40 * 3 and len(prep.test) == 10 * 3
    assert prep.train.labels[::3].eq(1).all() and prep.train.labels[1::3].eq(0).all()
    stream = prepare(str(tmp_path / "ub.csv"), "userbehavior", "stream", negatives=1)
    assert len(stream.train) == 0 and len(stream.test) == 100
    firsts = stream.test.users[::2]
    assert firsts[0] == 0 and firsts[-1] == 9  # user 9 has the earliest times: first id


def test_predefined_folds_share_ids_and_cold_items_get_ids(tmp_path: Path) -> None:
    (tmp_path / "a.base").write_text("1\t1\t5\t1\n2\t2\t3\t2\n")
    (tmp_path / "a.test").write_text("1\t3\t4\t3\n")
    prep = prepare(None, "movielens", "random", train_path=str(tmp_path / "a.base"),
                   test_path=str(tmp_path / "a.test"))
    assert prep.task == "rating" and prep.num_items == 3
    assert torch.equal(prep.test.items, torch.tensor([2]))
