import json

from neural_mapping.cli import main


def test_demo_writes_every_output_and_scores_the_mesh(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--frames", "30", "--size", "80", "60", "--extra-seconds", "3"])
    assert rc == 0
    for name in ("map.pt", "mesh.ply", "gt_mesh.ply", "config.yaml", "metrics.json", "scene_bag/metadata.yaml"):
        assert (out / name).is_file(), name
    for k in range(3):
        assert (out / f"view{k}" / "color.png").is_file() and (out / f"view{k}" / "depth.npy").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_added"] + m["frames_held_out"] + m["frames_dropped"] == 30
    mv = m["mesh_vs_gt"]
    assert 0.0 <= mv["fscore_5cm"] <= 1.0 and mv["n_gt_points"] > 0
    assert "neural_mapping demo" in capsys.readouterr().out


def test_demo_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "5"]) == 2
    assert "--frames must be at least 10" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err
