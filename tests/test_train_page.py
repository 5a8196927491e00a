"""The Train page: needs an accepted ground truth, starts a background training job, shows its curves, the registry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.network.bundle import list_bundles
from core.workflow.ground_truth import accept_candidate, train_candidate
from core.workflow.jobs import list_jobs
from core.workflow.labels import import_demo_scribbles

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("REACTOMO_MODELS", str(root))
    return root


@pytest.fixture
def gt_project(demo_project, models):
    """The small demo with its scribbles learned by the forest and accepted as ground truth."""
    import_demo_scribbles(demo_project)
    train_candidate(demo_project)
    accept_candidate(demo_project)
    return demo_project


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages/4_Train.py"), default_timeout=60)
    at.session_state["project_name"] = "demo"
    return at


def _tiny(at: AppTest, name: str, epochs: int = 2) -> AppTest:
    at.number_input(key="tr_width").set_value(4)
    at.number_input(key="tr_depth").set_value(2)
    at.number_input(key="tr_patch").set_value(16)
    at.number_input(key="tr_batch").set_value(8)
    at.number_input(key="tr_epochs").set_value(epochs)
    at.slider(key="tr_factor").set_value(1)
    at.text_input(key="tr_name").set_value(name)
    return at


def _start(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Start training").click().run()


def _wait(project, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = list_jobs(project.root, kind="train")
        if jobs and not jobs[0].is_active:
            return jobs[0]
        time.sleep(0.2)
    pytest.fail("the training job did not finish in time")


def test_thin_laths_are_painted_by_default_and_only_into_augmented_copies(gt_project, models):
    from core.network.train import THIN_EXAMPLES

    at = _page().run()
    assert at.slider(key="tr_thin").value == int(round(100 * THIN_EXAMPLES))
    _tiny(at, "no-copies")  # factor 1: no augmented copy to paint into; the default then paints none, unrefused
    at.slider(key="tr_thin").set_value(30)  # but a share the user set is refused, and nothing starts
    _start(at)
    assert not at.exception, at.exception
    assert any("painted into the augmented copies" in e.value for e in at.error), [e.value for e in at.error]
    assert not list_jobs(gt_project.root, kind="train")
    at.slider(key="tr_thin").set_value(int(round(100 * THIN_EXAMPLES)))
    _start(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert list_jobs(gt_project.root, kind="train")[0].params["train"]["thin_p"] == 0.0


def test_without_accepted_ground_truth_points_to_the_ground_truth_page(demo_project, models):
    at = _page().run()
    assert not at.exception
    assert any("no accepted ground truth" in i.value for i in at.info)
    assert any('href="./ground-truth"' in m.value for m in at.markdown)


def _card_precision(path) -> str:
    from core.network.bundle import read_card as _card

    return _card(path)["training"]["precision"]


def test_train_see_curves_rename_and_delete(gt_project, models):
    at = _page().run()
    assert not at.exception, at.exception
    assert any("Device:" in m.value and ("CPU" in m.value or "CUDA" in m.value) for m in at.markdown)
    assert at.text_input(key="tr_name").value == "demo-unet-1"
    _tiny(at, "tiny")
    at.slider(key="tr_thin").set_value(50)
    at.slider(key="tr_factor").set_value(2)  # painted into the augmented copies
    at.number_input(key="tr_lr_drop").set_value(1)
    at.selectbox(key="tr_cpu_amp").set_value(True)  # bfloat16
    _start(at)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    job = _wait(gt_project)
    assert job.status == "done", job.error
    assert job.params["unet"]["width"] == 4 and job.params["train"]["max_epochs"] == 2
    assert job.params["train"]["thin_p"] == 0.5  # thin laths painted, and what they were made of is in the card
    assert job.params["train"]["lr_drop_patience"] == 1  # the learning-rate drop reaches the training
    assert job.params["train"]["cpu_amp"] is True and _card_precision(models / "tiny") == "bfloat16"
    from core.network.bundle import read_card as _card

    assert _card(models / "tiny")["training"]["thin_examples"]["share"] == 0.5
    assert (job.params["models_root"]) == str(models)

    at.run()
    assert not at.exception, at.exception
    from core.network.bundle import read_card
    from core.network.train import quality_warning

    poor = quality_warning(read_card(models / "tiny")["metrics"]["val_dice"])  # a 2-epoch, 4-channel net: likely poor
    finished = [a.value for a in (at.warning if poor else at.success) if "Training finished after 2 epochs" in a.value]
    assert len(finished) == 1 and (poor is None or poor in finished[0]), (poor, finished)
    assert not any("Training finished" in a.value for a in (at.success if poor else at.warning))
    assert len(at.get("plotly_chart")) == 2
    table = at.dataframe[0].value
    assert list(table["Model"]) == ["tiny"] and table["Classes"][0].count(",") == len(gt_project.phases()) - 1
    assert 0 <= table["Mean val. Dice"][0] <= 1 and table["Size (MB)"][0] > 0
    assert table["Validation"][0] == ("poor" if poor else "good")

    # rename, then a taken or bad new name is one sentence
    at.selectbox(key="reg_rename_old").set_value("tiny")
    at.text_input(key="reg_rename_new").set_value("tiny-v2")
    next(b for b in at.button if b.label == "Rename").click().run()
    assert not at.exception and not at.error
    assert [b.name for b in list_bundles(models)] == ["tiny-v2"]
    at.text_input(key="reg_rename_new").set_value("../escape")
    next(b for b in at.button if b.label == "Rename").click().run()
    assert len(at.error) == 1 and "not allowed" in at.error[0].value
    assert [b.name for b in list_bundles(models)] == ["tiny-v2"]

    # delete needs the confirmation, then moves to the trash
    assert next(b for b in at.button if b.label == "Delete model").disabled
    at.checkbox(key="reg_delete_sure").check().run()
    next(b for b in at.button if b.label == "Delete model").click().run()
    assert not at.exception and not at.error
    assert list_bundles(models) == [] and any((models / ".trash").iterdir())
    assert any("No models in" in c.value for c in at.caption)


@pytest.mark.parametrize("name", ["", "a/b"])
def test_bad_model_name_is_one_sentence_and_starts_nothing(gt_project, models, name):
    at = _tiny(_page().run(), name)
    _start(at)
    assert not at.exception
    assert len(at.error) == 1 and "Model name" in at.error[0].value
    assert list_jobs(gt_project.root, kind="train") == []


def test_an_oversized_training_is_refused_with_its_memory_estimate(gt_project, models, monkeypatch):
    """Issue 12: `train --patch 1000` peaked at 9.2 GB and one oversized form could take the server down for all.
    Now the page refuses settings over the budget (default 4 GB), says the estimate, and starts nothing."""
    monkeypatch.delenv("REACTOMO_MEMORY_BUDGET_GB", raising=False)
    at = _tiny(_page().run(), "huge")
    at.number_input(key="tr_patch").set_value(1000)
    at.number_input(key="tr_batch").set_value(64)
    _start(at)
    assert not at.exception
    assert len(at.error) == 1
    text = at.error[0].value
    assert text.startswith("This training would need about ") and "GB of memory (patch 1000 × batch 64" in text
    assert "more than the 4 GB budget of this server" in text and r"REACTOMO\_MEMORY\_BUDGET\_GB" in text  # as written
    assert list_jobs(gt_project.root, kind="train") == []


def test_the_memory_estimate_grows_with_the_settings_and_the_budget_is_configurable(monkeypatch):
    from core.errors import ReactomoError
    from core.network.train import TrainConfig, check_training_memory, estimate_training_memory, memory_budget_bytes

    small = estimate_training_memory(TrainConfig(patch_size=64, batch_size=16), width=16)
    assert 0.5e9 < small < 1e9  # the defaults fit any laptop
    assert estimate_training_memory(TrainConfig(patch_size=128, batch_size=16), width=16) - 0.5e9 == pytest.approx(
        4 * (small - 0.5e9), rel=1e-6)  # quadratic in the patch side
    assert estimate_training_memory(TrainConfig(patch_size=64, batch_size=16), width=32) > small
    monkeypatch.setenv("REACTOMO_MEMORY_BUDGET_GB", "64")
    assert memory_budget_bytes() == 64e9
    check_training_memory(TrainConfig(patch_size=512, batch_size=16), width=16)  # 7 GB: inside 64 GB
    assert estimate_training_memory(TrainConfig(patch_size=512, batch_size=16), width=16, n_patches=2) < small * 3
    for bad in ("lots", "-1"):
        monkeypatch.setenv("REACTOMO_MEMORY_BUDGET_GB", bad)
        with pytest.raises(ReactomoError, match="REACTOMO_MEMORY_BUDGET_GB is"):
            memory_budget_bytes()


def _finished_run(project, models, name: str, val_dice: dict, averaged: list[int] | None = None,
                  averaging: dict | None = None) -> None:
    """A done training job and its saved model whose card holds ``val_dice`` as the kept weights' Dice (the best
    epoch's, or with ``averaged`` the average of those epochs')."""
    import json

    from core.network.bundle import save_bundle
    from core.workflow.jobs import _new_job_id
    from core.network.train import TrainConfig
    from core.network.unet import UNetConfig, build_unet

    phases = project.phases()
    ucfg = UNetConfig(width=4, depth=2, n_classes=len(phases))
    save_bundle(models / name, build_unet(ucfg), config=ucfg, phases=phases, normalisation={"offset": 0.0, "scale": 1.0},
                training={}, provenance={"project": project.name},
                metrics={"best_epoch": 2, "val_loss": 0.9, "val_dice": val_dice, "epochs": 2,
                         **({"averaged_epochs": averaged} if averaged else {}),
                         **({"averaging": averaging} if averaging else {})}, seed=0)
    job_id = _new_job_id()
    folder = project.root / "jobs" / job_id
    folder.mkdir(parents=True)
    params = {"name": name, "unet": ucfg.to_dict(), "train": TrainConfig(max_epochs=2).to_dict(),
              "models_root": str(models), "project": project.name}
    (folder / "job.json").write_text(json.dumps({"id": job_id, "kind": "train", "title": f"Train {name}", "params": params,
                                                 "status": "done", "progress": 1.0,
                                                 "result": {"model": name, "path": str(models / name)}}))
    (folder / "events.jsonl").write_text("".join(
        json.dumps({"epoch": e, "train_loss": 1.0, "val_loss": 1.0 - 0.05 * e, "val_dice": val_dice}) + "\n" for e in (1, 2)))


def test_a_poor_model_is_a_warning_not_a_success(gt_project, models):
    from core.network.train import quality_warning

    poor = {"gypsum": 0.93, "bassanite": 0.61, "pore": 0.72, "celestite": 0.12}
    _finished_run(gt_project, models, "weak", poor)
    at = _page().run()
    assert not at.exception, at.exception
    assert not any("Training finished" in s.value for s in at.success)
    (finished,) = [w.value for w in at.warning if "Training finished after 2 epochs" in w.value]
    assert "the model 'weak' is in the registry below" in finished and quality_warning(poor) in finished
    assert "celestite 0.12 is under 0.5" in finished and "the mean 0.59 is under 0.8" in finished
    table = at.dataframe[0].value
    assert list(table["Model"]) == ["weak"] and list(table["Validation"]) == ["poor"]


def test_a_good_model_is_a_success(gt_project, models):
    good = {"gypsum": 0.98, "bassanite": 0.92, "pore": 0.92, "celestite": None}  # no celestite in validation: ignored
    _finished_run(gt_project, models, "fine", good)
    at = _page().run()
    assert not at.exception, at.exception
    assert any("Training finished after 2 epochs, best epoch 2 with mean validation Dice 0.94" in s.value for s in at.success)
    assert not any("Training finished" in w.value for w in at.warning)
    assert list(at.dataframe[0].value["Validation"]) == ["good"]


# ------------------------------------------------------------------------------------------------ real browser
@pytest.mark.browser
def test_browser_live_training_screenshot_and_stop(tmp_path, monkeypatch):
    """A run in progress refreshes itself with its curves; Stop ends the job "cancelled"."""
    from conftest import SMALL_DEMO, browser_page, launch_streamlit, settle
    from core.workflow.data import create_demo_project
    from core.imaging.synthetic import DemoConfig

    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("REACTOMO_WORKSPACE", str(ws))
    monkeypatch.setenv("REACTOMO_MODELS", str(tmp_path / "models"))
    project = create_demo_project("demo", workspace=ws, config=DemoConfig(**SMALL_DEMO))
    import_demo_scribbles(project)
    train_candidate(project)
    accept_candidate(project)
    shots = ROOT / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)

    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=1400) as pg:
        pg.goto(url)  # a fresh server answers its first deep link with "page not found"
        settle(pg)
        pg.goto(f"{url}/train?project=demo")
        pg.get_by_text("Training settings").first.wait_for()
        settle(pg)
        for label, value in (("Max epochs", "30"), ("Width (channels)", "8"), ("Depth (levels)", "2"),
                             ("Patch size (px)", "16"), ("Batch size", "8")):
            box = pg.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Tab")
        pg.get_by_label("Model name", exact=True).fill("browser-run")
        pg.get_by_role("button", name="Start training").click()
        pg.get_by_text("Training in progress").wait_for(timeout=30_000)
        # at least two epochs drawn: the validation-loss trace has 2+ markers
        pg.wait_for_function(
            "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => (p.data || []).some("
            "t => t.name === 'validation loss' && t.x && t.x.length >= 2))", timeout=45_000)
        pg.wait_for_timeout(500)
        assert "Traceback" not in pg.inner_text("body")
        pg.screenshot(path=str(shots / "train.png"), full_page=True)

        # a reload finds the running job on disk (not in the session) and keeps refreshing
        pg.reload()
        pg.get_by_text("Training in progress").wait_for(timeout=30_000)
        pg.get_by_role("button", name="Stop").click()
        pg.get_by_text("Training was stopped after").wait_for(timeout=30_000)
        jobs = list_jobs(project.root, kind="train")
        assert jobs[0].status == "cancelled"
        assert "Traceback" not in pg.inner_text("body")
    # the model kept from the stopped run says it was stopped, in its card and in the project's record, so that the
    # Segment page does not offer it first (a user's walk)
    from core.network.bundle import read_card
    from core.workflow.project import open_project

    card = read_card(tmp_path / "models" / "browser-run")
    assert card["metrics"]["cancelled"] is True and "networks_asked" not in card["metrics"]  # one network asked
    record = open_project("demo").manifest["models"][-1]
    assert record["name"] == "browser-run" and record["cancelled"] is True


def test_interrupted_run_shows_its_curves_and_resumes_from_its_checkpoint_folder(gt_project, models):
    import json
    import os

    from core.workflow.jobs import _new_job_id
    from core.network.train import TrainConfig
    from core.network.unet import UNetConfig

    # a run whose server died after one epoch: record still "running", nobody behind it
    job_id = _new_job_id()
    folder = gt_project.root / "jobs" / job_id
    folder.mkdir(parents=True)
    params = {"name": "again", "unet": UNetConfig(width=4, depth=2, n_classes=len(gt_project.phases())).to_dict(),
              "train": TrainConfig(patch_size=16, batch_size=8, max_epochs=2, augment_factor=1).to_dict(),
              "models_root": str(models), "project": "demo"}
    (folder / "job.json").write_text(json.dumps({"id": job_id, "kind": "train", "title": "Train again", "params": params,
                                                 "status": "running", "pid": os.getpid()}))
    (folder / "events.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "val_loss": 1.1,
                                                     "val_dice": {p.name: 0.5 for p in gt_project.phases()}}) + "\n")
    at = _page().run()
    assert not at.exception, at.exception
    assert any("was interrupted after 1 epoch (" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 2
    next(b for b in at.button if b.label == "Resume").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    job = _wait(gt_project)
    assert job.id != job_id and job.status == "done", job.error
    assert job.params["resume"] is True and job.params["checkpoint_dir"] == str(folder / "checkpoints")
    assert [b.name for b in list_bundles(models)] == ["again"]


def test_a_model_name_taken_by_the_last_run_is_replaced_by_a_free_one(gt_project, models):
    """A user walk trained 'demo-unet-1', then found the field still holding it and the next start refused."""
    import shutil

    at = _page()
    at.session_state["tr_name"] = "mine"  # as after the form that started a run under that name
    at.session_state["tr_started_name"] = "mine"
    at.run()
    assert not at.exception and at.text_input(key="tr_name").value == "mine"  # free: kept
    shutil.copytree(ROOT / "models" / "demo-unet", models / "mine")  # as the run saves it when it ends
    at.run()
    assert not at.exception and at.text_input(key="tr_name").value == "demo-unet-1"


def test_a_taken_model_name_typed_by_the_user_is_refused_not_replaced(gt_project, models):
    """A user's walk typed 'demo-unet' (in the registry) and pressed Start: a run started as 'demo-unet-1' instead of
    the sentence saying the name is taken."""
    import shutil

    shutil.copytree(ROOT / "models" / "demo-unet", models / "taken")
    at = _page().run()
    at.text_input(key="tr_name").set_value("taken")
    _start(at)
    assert not at.exception
    assert any("A model called 'taken' already exists" in e.value for e in at.error), [e.value for e in at.error]
    assert list_jobs(gt_project.root, kind="train") == []
    assert at.text_input(key="tr_name").value == "taken"  # the user's own text stays, to be changed


def test_a_model_of_averaged_weights_says_which_epochs_were_averaged(gt_project, models):
    good = {"gypsum": 0.98, "bassanite": 0.92, "pore": 0.92, "celestite": None}
    _finished_run(gt_project, models, "merged", good, averaged=[1, 2])
    at = _page().run()
    assert not at.exception, at.exception
    assert any("Training finished after 2 epochs, the weights of epochs 1, 2 averaged with mean validation Dice 0.94"
               in s.value for s in at.success)
    assert at.number_input(key="tr_average").value == 5


def test_an_average_that_was_not_kept_is_said_beside_the_best_epoch(gt_project, models):
    good = {"gypsum": 0.98, "bassanite": 0.92, "pore": 0.92, "celestite": None}
    _finished_run(gt_project, models, "unmerged", good,
                  averaging={"epochs": [1, 2], "val_loss": 1.2, "kept": False, "reason": "worse"})
    at = _page().run()
    assert not at.exception, at.exception
    assert any("best epoch 2 (the average of epochs 1, 2 validated worse, so it was not kept) with mean validation "
               "Dice 0.94" in s.value for s in at.success)


def test_two_networks_averaged_train_one_after_the_other_and_are_saved_as_one_model(gt_project, models):
    at = _page().run()
    _tiny(at, "pair")
    at.number_input(key="tr_members").set_value(2)
    _start(at)
    assert not at.exception, at.exception
    job = _wait(gt_project, timeout=120)
    assert job.status == "done", job.error
    assert job.params["members"] == 2
    from core.network.bundle import load_bundle, read_card
    from core.network.unet import UNetEnsemble

    card = read_card(models / "pair")
    assert card["ensemble"]["members"] == 2 and card["ensemble"]["seeds"] == [0, 1]
    assert [m["epochs"] for m in card["training"]["members"]] == [2, 2]
    assert isinstance(load_bundle(models / "pair")[0], UNetEnsemble)
    at.run()
    assert not at.exception, at.exception
    said = [a.value for a in list(at.success) + list(at.warning) if "Training finished" in a.value]
    assert len(said) == 1 and "after 2 and 2 epochs of 2 networks, their probabilities averaged" in said[0], said
    assert [t.label for t in at.tabs] == ["Network 1", "Network 2"]
    assert len(at.get("plotly_chart")) == 4  # loss and Dice curves of each network
    assert list(at.dataframe[0].value["Networks"]) == [2]
