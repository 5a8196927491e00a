"""Train: a U-Net learns the project's accepted ground truth, in the background, with live curves; the model registry."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

import ui
from core.network.bundle import check_bundle_name, delete_bundle, list_bundles, rename_bundle
from core.charts import training_curves, validation_dice_curves
from core.errors import ReactomoError
from core.workflow.ground_truth import load_accepted, redraw_outdated
from core.workflow.jobs import list_jobs, read_events, request_cancel
from core.network.train import LOSSES, MAX_EPOCHS, OPTIMISERS, TRANSFORMS, TrainConfig, check_training_memory, quality_warning
from core.network.train import ENSEMBLE, MAX_ENSEMBLE, THIN_EXAMPLES
from core.network.train import MIN_MEAN_DICE, MIN_PHASE_DICE, dice_text
from core.network.unet import UNetConfig, device_summary, select_device
from core.workflow.worker import submit_job
from core.workflow.paths import training_checkpoints

KIND = "train"




def _launch(project, params: dict) -> None:
    submit_job(project, KIND, params, title=f"Train {params['name']}")
    st.session_state["tr_started_name"] = params["name"]  # the name this page's last run saves under


def _history(job) -> list[dict]:
    return [e for e in read_events(project.root, job.id) if "epoch" in e]


def _networks(history: list[dict]) -> list[list[dict]]:
    """The epochs of each network of an ensemble, in order (one list for a single network)."""
    by: dict[int, list[dict]] = {}
    for e in history:
        by.setdefault(int(e.get("member", 1)), []).append(e)
    return [by[k] for k in sorted(by)] or [[]]


def _poor(val_dice) -> str | None:
    """core's quality sentence for a card's validation Dice (a damaged card reads as its error sentence)."""
    try:
        return quality_warning(val_dice if isinstance(val_dice, dict) else {})
    except ReactomoError as exc:
        return str(exc)


def _bundles(root) -> list:
    try:
        return list_bundles(root)
    except ReactomoError:
        return []  # the registry's own section below says what is wrong with it




def _curves(history: list[dict], key: str, planned: int | None = None) -> None:
    if not history:
        st.caption("The curves appear after the first epoch.")
        return
    c1, c2 = st.columns(2)
    c1.plotly_chart(training_curves(history, planned_epochs=planned), width="stretch", key=f"{key}_loss")
    c2.plotly_chart(validation_dice_curves(history, phases, planned_epochs=planned), width="stretch", key=f"{key}_dice")


def _status_sentence(job, history: list[dict]) -> tuple[str, str]:
    """(streamlit alert kind, one sentence) for a finished job."""
    name = job.params.get("name", "?")
    nets = _networks(history)
    n = len(history)
    epochs = (f"{n} epoch{'s' if n != 1 else ''}" if len(nets) == 1 else
              f"{' and '.join(str(len(h)) for h in nets)} epochs of {len(nets)} networks")
    saved = (Path(job.params.get("models_root", ui.models_root())) / name / "card.json").exists()
    if job.status == "done":
        best = min(nets[-1], key=lambda h: h["val_loss"] if h.get("val_loss") is not None else math.inf) if history else {}
        # the saved model's own card when it is in the registry (what Segment will use), else the best epoch seen
        card = next((b.metrics for b in _bundles(job.params.get("models_root", ui.models_root())) if b.name == name), None)
        val_dice = (card or {}).get("val_dice") or best.get("val_dice") or {}
        dice = [v for v in val_dice.values() if v is not None and v == v]
        at = (card or {}).get("best_epoch") or best.get("epoch")
        merged = (card or {}).get("averaged_epochs") or []
        kept = (f"the weights of epochs {', '.join(str(e) for e in merged)} averaged" if merged else f"best epoch {at}")
        if len(nets) > 1:  # the card's validation is the averaged network's on the held-out slices
            kept = "their probabilities averaged,"
        tried = ((card or {}).get("averaging") or {}) if len(nets) == 1 else {}
        if tried and tried.get("kept") is False:  # an average that validated worse than the best epoch
            kept += (f" (the average of epochs {', '.join(str(e) for e in tried.get('epochs', []))} validated worse, so "
                     "it was not kept)")
        extra = f", {kept} with mean validation Dice {dice_text(sum(dice) / len(dice))}" if dice else ""
        if poor := _poor(val_dice):
            return "warning", f"Training finished after {epochs}{extra}; the model '{name}' is in the registry below. {poor}"
        return "success", f"Training finished after {epochs}{extra}; the model '{name}' is in the registry below."
    if job.status == "cancelled":
        tail = f"the best epoch so far was saved as '{name}'." if saved else "no model was saved."
        return "warning", f"Training was stopped after {epochs}; {tail}"
    if job.status == "interrupted":
        return "warning", (f"Training of '{name}' was interrupted after {epochs} ({ui.plain(job.error or 'the server stopped')}); "
                           "resume it from its last checkpoint or start a new run.")
    return "error", f"Training of '{name}' failed: {ui.plain(job.error or 'unknown error')}"


ui.page_setup("Train")
project = ui.require_project()
ui.sidebar_project(project)
ss = st.session_state

st.title("Train")
st.caption("A U-Net learns every phase from the accepted ground truth (the random forest's labelling of the brushed "
           "slices, and of more slices of the same step), slice by slice, or each with the slice above and below "
           "(2.5D) if you choose it. When it is done, the cleaning it will use is chosen from the same ground truth "
           "and saved with it. Training runs in the background: you can leave this page or reload it, the run goes "
           "on.")

accepted = load_accepted(project)
if accepted is None:
    st.info("This project has no accepted ground truth yet. Train the random forest and accept its labelling first.")
    st.markdown('<a href="./ground-truth" target="_self">Go to the Ground truth page</a>', unsafe_allow_html=True)
    st.stop()
phases = project.phases()
device = select_device("auto")
st.markdown(f":material/memory: **Device:** {device_summary(device)} · chosen automatically "
            f"({'mixed precision on' if device.type == 'cuda' else 'no GPU found, so the CPU'})")
more = len(accepted.extra_slices)
st.caption(f"Ground truth: {accepted.step_name}, {len(accepted.slices)} slices "
           f"({', '.join(f'z {z}' for z in accepted.slices)})"
           + (f" and {more} more the forest labelled for training (never validated on; those beside a held-out slice "
              "left out)" if more else "") + f" · models are saved to `{ui.models_root()}`")
if outdated := redraw_outdated(accepted, phases):
    st.info(outdated.replace("This labelling", "The accepted ground truth").replace(
        "Train the forest again", "Train the forest again on the Ground truth page and accept it"), icon=":material/update:")

if msg := ss.pop("train_flash", None):
    st.success(msg, icon=":material/check_circle:")

jobs = []
with ui.user_errors():
    jobs = list_jobs(project.root, kind=KIND)
latest = jobs[0] if jobs else None
active = latest is not None and latest.is_active


# ------------------------------------------------------------------------------------------------ live run
@st.fragment(run_every=2)
def live_run(job_id: str) -> None:
    from core.workflow.jobs import read_job

    job = read_job(project.root, job_id)
    if not job.is_active:
        st.rerun()  # the whole page switches to the final state
    nets = _networks(_history(job))
    history = nets[-1]  # the network training now
    members = int(job.params.get("members", 1))
    st.subheader("Training in progress" if members == 1 else f"Training network {len(nets)} of {members}")
    epochs = job.params.get("train", {}).get("max_epochs", "?")
    m1, m2, m3, m4 = st.columns([2, 1, 1, 1], vertical_alignment="center")
    m1.markdown(f"**{job.params.get('name', job.title)}** · started {(job.started or job.created or '')[:19].replace('T', ' ')} UTC"
                + (f" · {members} networks, their probabilities averaged" if members > 1 else ""))
    m2.metric("Epochs done" if members == 1 else f"Epochs of network {len(nets)}", f"{len(history)} / {epochs}")
    m3.metric("Time left", ui.fmt_duration(job.eta_s) if job.status == "running" else "waiting")
    with m4:
        if st.button("Stop", icon=":material/stop_circle:", key="train_stop", width="stretch",
                     help="Stops after the current batch; the best epoch so far is kept as the model."):
            with ui.user_errors():
                request_cancel(project.root, job_id)
                st.toast("Stopping after the current batch.", icon=":material/stop_circle:")
    st.progress(float(job.progress), text=job.message or "starting")
    _curves(history, "live", planned=int((job.params.get("train") or {}).get("max_epochs") or 0) or None)


if active:
    live_run(latest.id)
elif latest is not None:
    history = _history(latest)
    st.subheader("Last run")
    kind, sentence = _status_sentence(latest, history)
    icon = ":material/warning:" if kind == "warning" and latest.status == "done" else {
        "success": ":material/check_circle:", "warning": ":material/pause_circle:", "error": ":material/error:"}[kind]
    getattr(st, kind)(sentence, icon=icon)
    if latest.status == "interrupted" and not (Path(latest.params.get("models_root", "")) / latest.params.get("name", "") / "card.json").exists():
        if st.button("Resume", icon=":material/play_arrow:", type="primary", help="Continue from the last saved epoch."):
            with ui.user_errors():
                ckpt = latest.params.get("checkpoint_dir") or str(training_checkpoints(project, latest.id))
                _launch(project, {**latest.params, "checkpoint_dir": ckpt, "resume": True})
                st.rerun()
    nets = _networks(history)
    if len(nets) == 1:
        _curves(history, "last")
    else:
        for i, (tab, h) in enumerate(zip(st.tabs([f"Network {i + 1}" for i in range(len(nets))]), nets)):
            with tab:
                _curves(h, f"last{i}")


# ------------------------------------------------------------------------------------------------ settings
def _default_name() -> str:
    taken = {b.name for b in list_bundles(ui.models_root())}
    i = 1
    while f"{project.name}-unet-{i}" in taken:
        i += 1
    return f"{project.name}-unet-{i}"


# the name of the run this page started, once that run has saved its model under it, is replaced by a free one, so
# the next run does not start with a name that is refused; a taken name the user typed stays, and is refused in a
# sentence when the run is started (replacing it too had made such a start silently train under another name)
if (st.session_state.get("tr_name") == st.session_state.get("tr_started_name")
        and st.session_state.get("tr_name") in {b.name for b in list_bundles(ui.models_root())}):
    st.session_state["tr_name"] = _default_name()
tdef, udef = TrainConfig(), UNetConfig()
with st.expander("Training settings", expanded=not active, icon=":material/tune:"):
    with st.form("train_settings", border=False, enter_to_submit=False):  # Enter never starts a long job
        st.markdown("**Patches**")
        c1, c2, c3, c4, c5 = st.columns(5)
        patch = c1.number_input("Patch size (px)", 8, 1024, tdef.patch_size, step=8, key="tr_patch",
                                help="Side of the square training patches, in scan pixels.")
        stride = c2.selectbox("Stride", [1.0, 0.5], key="tr_stride",
                              format_func=lambda r: "1.0 · side by side" if r == 1.0 else "0.5 · 50 % overlap")
        batch = c3.number_input("Batch size", 1, 1024, tdef.batch_size, key="tr_batch")
        val = c4.slider("Validation share (%)", 5, 50, int(tdef.val_fraction * 100), key="tr_val",
                        help="Held out by slice (by a strip when there is one slice), never seen in training.")
        arithmetic = {None: "auto (native bf16)", True: "bfloat16", False: "float32"}  # TrainConfig.cpu_amp
        cpu_amp = c5.selectbox("CPU arithmetic", list(arithmetic), key="tr_cpu_amp",
                               index=list(arithmetic).index(tdef.cpu_amp), format_func=arithmetic.get,
                               help="Training on a CPU in bfloat16 with channels-last convolutions is about twice as "
                                    "fast where the CPU computes bfloat16 natively (AVX-512 BF16 or AMX); the weights "
                                    "and the loss stay float32. A GPU trains in float16 either way.")
        st.markdown("**Schedule and loss**")
        c1, c2, c5, c0, c3, c4 = st.columns(6)
        epochs = c1.number_input("Max epochs", 1, MAX_EPOCHS, tdef.max_epochs, key="tr_epochs")
        patience = c2.number_input("Early-stopping patience (epochs)", 0, MAX_EPOCHS, tdef.patience, key="tr_patience",
                                   help="Stop when the validation loss has not improved for this many epochs; 0 = never.")
        lr_drop = c5.number_input("Learning-rate drop after (epochs)", 0, MAX_EPOCHS, tdef.lr_drop_patience,
                                  key="tr_lr_drop",
                                  help=f"The learning rate is multiplied by {tdef.lr_drop_factor:g} after this many "
                                       "epochs without a lower validation loss (count it below the early-stopping "
                                       "patience); 0 keeps it constant.")
        averaged = c0.number_input("Epochs averaged", 0, 20, tdef.average_epochs, key="tr_average",
                                   help="The model kept is the average of the weights of this many epochs of lowest "
                                        "validation loss, its batch-norm statistics measured again (weight averaging); "
                                        "0 or 1 keeps the best epoch alone. The default was chosen on the accuracy "
                                        "benchmark's tuning half with two seeds, by Dice against the truth.")
        loss = c3.selectbox("Loss", list(LOSSES), index=list(LOSSES).index(tdef.loss), key="tr_loss",
                            format_func=lambda k: {"ce": "CE", "dice": "Dice", "ce+dice": "CE + Dice"}[k],
                            help="CE: cross-entropy; Dice: soft Dice; CE + Dice (default): both, summed.")
        weights = c4.selectbox("Class weights", ["sqrt", "balanced", "none"], index=["sqrt", "balanced", "none"].index(
                                   tdef.class_weights), key="tr_weights",
                               format_func=lambda k: {"sqrt": "1/√f (default)", "balanced": "1/f", "none": "None"}[k],
                               help="How much rare phases (e.g. celestite, young bassanite) count in the cross-entropy: "
                                    "by 1/√f, f a phase's frequency (default, chosen on the accuracy benchmark's tuning "
                                    "half), by 1/f (balanced), or not at all.")
        st.markdown("**Augmentation**")
        c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
        augment = c1.toggle("Augment", value=tdef.augment, key="tr_augment")
        transforms = c2.multiselect("Transforms", list(TRANSFORMS), default=list(tdef.transforms), key="tr_transforms",
                                    format_func=lambda t: {"flip": "flips", "rot90": "90° rotations", "shear": "shear",
                                                           "scale": "scale", "intensity": "intensity (gain/offset)"}.get(t, t),
                                    help="Geometry (flips, rotations, shear, scale) changes image and labels alike. Intensity "
                                         "jitters the normalised grey values by ±2 % gain and ±0.005 offset; off by default "
                                         "(it did not help on the demo).")
        factor = c3.slider("Factor (×)", 1, 8, tdef.augment_factor, key="tr_factor",
                           help="Each epoch sees every training patch this many times, the first time as is.")
        thin_pct = c4.slider("Thin laths painted (%)", 0, 100, int(round(100 * THIN_EXAMPLES)), step=5, key="tr_thin",
                             help="Share of the augmented patches that get 1-3 thin laths of the product painted into "
                                  "the reactant's interior, or of the reactant into the product's, with the two phases' "
                                  "contrast and the scan's edge blur measured on these labels: thin objects whose labels "
                                  f"are right by construction. {int(round(100 * THIN_EXAMPLES))} % by default, as `run`: "
                                  "on the benchmark's tuning half it lowered the reaction extent's error and kept the "
                                  "Dice scores. Painted into the augmented copies only: none with augmentation off or a factor of 1.")
        st.markdown("**Optimiser and network**")
        c1, c2, c3, c4, c5, c6, c7 = st.columns(7)
        optimiser = c1.selectbox("Optimiser", list(OPTIMISERS), index=list(OPTIMISERS).index(tdef.optimizer), key="tr_opt",
                                 format_func=lambda k: {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD (momentum)"}[k])
        lr = c2.number_input("Learning rate", 1e-6, 1.0, tdef.lr, format="%.0e", step=1e-4, key="tr_lr")
        width = c3.number_input("Width (channels)", 1, 1024, udef.width, key="tr_width",
                                help="Channels of the first level; each deeper level doubles it.")
        depth = c4.number_input("Depth (levels)", 2, 8, udef.depth, key="tr_depth")
        context = c5.selectbox("Input slices", [1, 3], key="tr_context",
                               format_func=lambda n: "3 (2.5D)" if n == 3 else "1 (2D)",
                               help="1: each slice alone (the default). 3: each slice with the slice above and below "
                                    "(2.5D). On the benchmark family's tuning half the two gave the same Dice, within "
                                    "the spread between two seeds, so the simpler one is the default.")
        seed = c6.number_input("Seed", 0, 2**31 - 1 - MAX_ENSEMBLE, tdef.seed, key="tr_seed")
        members = c7.number_input("Networks averaged", 1, MAX_ENSEMBLE, ENSEMBLE, key="tr_members",
                                  help="Networks trained apart (seeds Seed, Seed + 1, ...; the same validation slices) "
                                       "whose class probabilities are averaged when segmenting: the spread between "
                                       "two trainings shrinks. Each network is a whole training, so 2 take twice "
                                       "the time.")
        name = st.text_input("Model name", value=_default_name(), max_chars=100, key="tr_name",
                             help="Letters, digits, '-', '_' and '.'; the folder name in the model registry.")
        start = st.form_submit_button("Start training", type="primary", icon=":material/model_training:",
                                      disabled=active)
if start:
    with ui.user_errors():
        name = (name or "").strip()
        check_bundle_name(name)
        if (ui.models_root() / name).exists():
            raise ReactomoError(f"A model called '{name}' already exists in {ui.models_root()}; choose another name.")
        if augment and not transforms and factor > 1:
            raise ReactomoError("Choose at least one augmentation transform, or switch augmentation off.")
        tcfg = TrainConfig(patch_size=int(patch), stride_ratio=float(stride), batch_size=int(batch),
                           max_epochs=int(epochs), patience=int(patience), val_fraction=val / 100.0,
                           augment=bool(augment), transforms=tuple(transforms), augment_factor=int(factor),
                           loss=loss, class_weights=weights, optimizer=optimiser,
                           lr=float(lr), seed=int(seed),
                           # the default paints into augmented copies only (as `train` without --no-augment); a share
                           # the user set without them is refused in TrainConfig's sentence
                           thin_p=0.0 if thin_pct == round(100 * THIN_EXAMPLES) and not (augment and factor > 1)
                           else thin_pct / 100.0,
                           average_epochs=int(averaged),
                           lr_drop_patience=int(lr_drop),
                           cpu_amp=cpu_amp)
        ucfg = UNetConfig(width=int(width), depth=int(depth), n_classes=len(phases), in_channels=int(context))
        check_training_memory(tcfg, width=ucfg.width, in_channels=ucfg.in_channels)  # refused here, not in the job
        _launch(project, {"name": name, "unet": ucfg.to_dict(), "train": tcfg.to_dict(), "members": int(members),
                          "models_root": str(ui.models_root()), "project": project.name})
        ss["train_flash"] = f"Started training '{name}'."
        st.rerun()

# ------------------------------------------------------------------------------------------------ registry
st.subheader("Model registry")
bundles = []
with ui.user_errors():
    bundles = list_bundles(ui.models_root())
if not bundles:
    st.caption(f"No models in `{ui.models_root()}` yet.")
else:
    def _dice(b) -> float | None:
        d = [v for v in (b.metrics.get("val_dice") or {}).values() if v is not None]
        return sum(d) / len(d) if d else None


    table = pd.DataFrame({
        "Model": [b.name for b in bundles],
        "Created (UTC)": [ui.fmt_date(b.created) for b in bundles],
        "Classes": [", ".join(b.phases) for b in bundles],
        "Mean val. Dice": [_dice(b) for b in bundles],
        "Validation": [("unknown" if _dice(b) is None else "poor") if _poor(b.metrics.get("val_dice")) else "good"
                       for b in bundles],
        "Epochs": [b.metrics.get("epochs") for b in bundles],
        "Networks": [b.members for b in bundles],
        "Size (MB)": [b.size_bytes / 1e6 for b in bundles],
    })
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "Mean val. Dice": st.column_config.NumberColumn(format="%.3f"),
        "Validation": st.column_config.TextColumn(help=f"poor: a phase's best validation Dice under {MIN_PHASE_DICE:g} "
                                                       f"or their mean under {MIN_MEAN_DICE:g}"),
        "Size (MB)": st.column_config.NumberColumn(format="%.2f")})
    names = [b.name for b in bundles]
    r1, r2 = st.columns(2, gap="large")
    with r1, st.form("rename_model", border=True):
        st.markdown(":material/edit: **Rename**")
        old = st.selectbox("Model", names, key="reg_rename_old")
        new = st.text_input("New name", key="reg_rename_new", max_chars=100)
        if st.form_submit_button("Rename"):
            with ui.user_errors():
                rename_bundle(ui.models_root(), old, (new or "").strip())
                ss["train_flash"] = f"Renamed '{old}' to '{new.strip()}'."
                st.rerun()
    with r2, st.container(border=True):
        st.markdown(":material/delete: **Delete**")
        victim = st.selectbox("Model", names, key="reg_delete_name")
        st.caption(f"Moves the model to `{ui.models_root() / '.trash'}`, where it can be recovered.")
        sure = st.checkbox(f"Yes, delete '{victim}'", key="reg_delete_sure")
        if st.button("Delete model", disabled=not sure, key="reg_delete"):
            with ui.user_errors():
                delete_bundle(ui.models_root(), victim)
                ss["train_flash"] = f"Moved '{victim}' to the trash."
                ss.pop("reg_delete_sure", None)
                st.rerun()
