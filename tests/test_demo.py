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
    # 1 s of frames + 3 s of training on a 2-core machine: 9-15 frames integrated (the others dropped while
    # training, so how much of the room is mapped depends on the load), 16-20 steps. Measured: precision@5cm
    # 0.94-0.98, accuracy 2.0-2.4 cm, recall@5cm 0.58-0.87, F@5cm 0.73-0.91, held-out depth L1 4.5-5.7 cm.
    # What the map shows must be right; an untrained field, wrong poses or a broken mesh extraction give an
    # empty mesh or surfaces off the ground truth, far below these bounds
    assert mv["n_gt_points"] > 0 and mv["n_pred_points"] > 0
    assert mv["precision_5cm"] >= 0.85 and mv["accuracy_cm"] < 4.0, mv
    assert mv["fscore_5cm"] >= 0.6 and mv["recall_5cm"] >= 0.4, mv
    assert m["held_out_depth_l1_m"] < 0.10, m["held_out"]
    # the classical baseline on the same frames, in the same run (issue 11 item 7)
    b = json.loads((out / "bench.json").read_text())
    assert set(b["rows"]) == {"ours", "tsdf_4cm"} and b["training_frames"] == 27 and b["held_out_frames"] == 3
    assert b["rows"]["tsdf_4cm"]["frames_used"] == 27
    assert 0.5 < b["rows"]["tsdf_4cm"]["fscore_5cm"] <= 1.0  # the same GT scoring for both rows
    assert m["comparison"]["rows"]["ours"]["fscore_5cm"] == mv["fscore_5cm"]
    assert abs(m["comparison"]["ratios"]["tsdf_4cm"]["chamfer_l1_cm"]
               - mv["chamfer_l1_cm"] / b["rows"]["tsdf_4cm"]["chamfer_l1_cm"]) < 1e-9
    for name in ("tsdf_4cm.ply", "views.png", "curve.png", "occupancy.png"):
        assert (out / name).is_file(), name
    text = capsys.readouterr().out
    assert "neural_mapping demo" in text and "| F@2cm |" in text and "ours / tsdf_4cm" in text


def test_demo_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--frames", "5"]) == 2
    assert "--frames must be at least 10" in capsys.readouterr().err
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--out", str(f)]) == 2
    assert "not a directory" in capsys.readouterr().err
