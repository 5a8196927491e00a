"""Reactomo home: open, create or delete a project, load the demo, and see where the workflow stands."""

from __future__ import annotations

import streamlit as st

import ui
from core.workflow.jobs import list_jobs, read_job
from core.workflow.access import create_share_link, link, revoke_share_links, share_links, team_mode
from core.workflow.project import (create_project, delete_project, list_projects, open_project, project_exists,
                                   workspace_dir)
from core.workflow.share import export_bytes, import_upload, latest_export
from core.workflow.worker import submit_job

#: The page of each checklist step, with the title the sidebar gives it.
PAGES = {"data": ("pages/1_Data.py", "Data"), "labels": ("pages/2_Label.py", "Label"),
         "ground_truth": ("pages/3_Ground_Truth.py", "Ground truth"), "model": ("pages/4_Train.py", "Train"),
         "segmentation": ("pages/5_Segment.py", "Segment"), "evaluation": ("pages/6_Evaluate.py", "Evaluate"),
         "analysis": ("pages/8_Analysis.py", "Analysis")}
OPTIONAL = ":gray[:material/remove_circle_outline:]"
DONE, TODO = ":green[:material/check_circle:]", ":gray[:material/radio_button_unchecked:]"


@st.fragment(run_every=1.0)
def _demo_progress(project, job_id: str) -> None:
    job = read_job(project.root, job_id)
    if not job.is_active:
        st.rerun()
    st.progress(min(max(float(job.progress), 0.0), 1.0),
                text=f"Making the demo experiment (it goes on if you close the tab): {job.message or 'starting'}")


@st.fragment(run_every=1.0)
def _export_progress(project, job_id: str) -> None:
    job = read_job(project.root, job_id)
    if not job.is_active:
        st.rerun()
    st.progress(min(max(float(job.progress), 0.0), 1.0), text=f"Exporting: {job.message or 'starting'}")


def share_section(project) -> None:
    """Export the open project as one .reactomo.zip (a job in the worker), and download the newest archive."""
    st.caption("One file with the results, the report, the labels (OME-Zarr), the models and a checksum of every "
               "file. A collaborator opens `index.html` and the reports straight from the unzipped folder, or imports "
               "the archive into their own Reactomo.")
    jobs = list_jobs(project.root, kind="export")
    latest = jobs[0] if jobs else None
    running = latest is not None and latest.is_active
    with_scans = st.checkbox("Include the scans", key="share_with_scans",
                             help="Without them the scans are referenced by path, size and checksum: small archives, "
                                  "and whoever imports it points the project at their copy of the scans.")
    if st.button("Export project", icon=":material/ios_share:", disabled=running, key="share_export"):
        with ui.user_errors():
            submit_job(project, "export", {"with_scans": bool(with_scans)}, title="Export the project")
            st.rerun()
    if running:
        _export_progress(project, latest.id)
    elif latest is not None and latest.status in ("failed", "interrupted"):
        st.error(f"The last export {latest.status}: {ui.plain(latest.error or 'no reason recorded')}", icon=":material/error:")
    found = latest_export(project)
    if found is not None and not running:
        name, _, size = found
        with ui.user_errors():
            st.download_button(f"Download {name} ({ui.fmt_bytes(size)})", data=export_bytes(project, name),
                               file_name=name, mime="application/zip", icon=":material/download:", key="share_download")


def share_link_section(project) -> None:
    """Read-only links for collaborators on this server: make one, see the live ones, revoke them all."""
    st.caption("A collaborator with this link sees the project's results, report and verdict, and can change, run or "
               "delete nothing. Anyone holding the link can look, so share it like a password; revoking stops every "
               "link at once.")
    base = st.context.url.split("?")[0].rstrip("/") if getattr(st.context, "url", None) else ""
    links = share_links(project)
    c1, c2 = st.columns(2)
    if c1.button("New share link", icon=":material/link:", key="share_new"):
        with ui.user_errors():
            create_share_link(project)
            st.rerun()
    if c2.button(f"Revoke all ({len(links)})", icon=":material/link_off:", disabled=not links, key="share_revoke"):
        with ui.user_errors():
            revoke_share_links(project)
            st.rerun()
    for s in links:
        st.code(link(base or "http://127.0.0.1:8501", project, share=s["token"]), language=None)
        st.caption(f"made {ui.fmt_date(s['created'])}")
    if team_mode():
        key = st.session_state.get("edit_keys", {}).get(project.name)
        if key:
            st.caption("Edit link (whoever holds it can change the project):")
            st.code(link(base or "http://127.0.0.1:8501", project, key=key), language=None)


def import_section() -> None:
    """A .reactomo.zip as a new project; everything in it is checked before anything is written."""
    up = st.file_uploader("Archive (.reactomo.zip)", type=["zip"], key="import_file")
    default = up.name.removesuffix(".zip").removesuffix(".reactomo").split("-20")[0] if up is not None else ""
    new = st.text_input("Name of the new project", value=default, max_chars=64, key=f"import_name_{default}")
    if st.button("Import", icon=":material/upload_file:", disabled=up is None or not new.strip(), key="import_go"):
        bar = st.progress(0.0, text="Checking the archive")
        with ui.user_errors():
            result = import_upload(up, new.strip(), on_progress=ui.progress_callback(bar))
            ui.release_uploads([up])
            st.session_state["home_flash"] = result.sentence
            ui.set_current_project(result.project.name)
            ui.hold_edit_key(result.project)
            st.rerun()
        bar.empty()


def home() -> None:
    ui.page_setup("Home")
    project = ui.current_project()
    ui.sidebar_project(project)

    st.title("Reactomo")
    st.markdown(
        "Phase volumes over time from time-resolved X-ray micro-CT of a reacting rock, "
        "checked against the chemistry of the reaction itself (the **internal standard**)."
    )

    flash = st.session_state.pop("home_flash", None)
    if flash:
        st.success(flash, icon=":material/check_circle:")

    left, right = st.columns([2, 3], gap="large")
    if project is not None and ui.read_only(project):
        with left:
            ui.read_only_notice(project, page_changes=False)
            st.markdown(f"**{project.name}**")
            cond = project.conditions()
            if cond:
                st.caption("; ".join(f"{k}: {v}" for k, v in cond.items()))
            st.page_link("pages/8_Analysis.py", label="See the results (Analysis)", icon=":material/analytics:")
        with right:
            checklist(project, read=True)
        return

    with left:
        st.subheader("Project")
        projects = list_projects()
        names = [p.name for p in projects]
        if names:
            current = project.name if project is not None and project.name in names else None
            choice = st.selectbox(
                "Open a project",
                names,
                index=names.index(current) if current else None,
                placeholder="Choose a project",
                key="home_open_project",
            )
            if choice and (project is None or choice != project.name):
                ui.set_current_project(choice)
                st.rerun()
        else:
            st.caption("No projects yet. Load the demo experiment or create a project.")

        if st.button("Load demo experiment", type="primary", icon=":material/science:", width="stretch",
                     help="A generated dehydrating-gypsum experiment with known truth (10 steps), made by the worker: "
                          "closing the tab or reloading does not stop it."):
            with ui.user_errors():
                existed = project_exists("demo")
                demo = open_project("demo") if existed else create_project("demo", voxel_size_um=2.75)
                ui.set_current_project(demo.name)
                if not existed:
                    ui.hold_edit_key(demo)
                if not demo.scans() and not [j for j in list_jobs(demo.root, kind="demo") if j.is_active]:
                    submit_job(demo, "demo", {}, title="Make the demo experiment")
                st.rerun()

        with st.expander("New project", icon=":material/add:"):
            with st.form("new_project", clear_on_submit=False, border=False):
                new_name = st.text_input("Name", placeholder="e.g. gypsum_run_2026_11", max_chars=64)
                if st.form_submit_button("Create project"):
                    with ui.user_errors():
                        created = create_project(new_name)
                        ui.set_current_project(created.name)
                        ui.hold_edit_key(created)
                        st.session_state["home_flash"] = (f"Project '{created.name}' created and opened: add its scans "
                                                          "on the Data page.")
                        st.rerun()

        with st.expander("Import a project", icon=":material/upload_file:"):
            import_section()
        if project is not None:
            with st.expander("Export the project", icon=":material/ios_share:"):
                share_section(project)
            with st.expander("Share a read-only link", icon=":material/link:"):
                share_link_section(project)
            with st.expander("Delete project", icon=":material/delete:"):
                st.caption(f"Moves '{project.name}' to the workspace trash ({workspace_dir()}/.trash), where it can be recovered.")
                sure = st.checkbox(f"Yes, delete '{project.name}'", key="confirm_delete")
                if st.button("Delete project", disabled=not sure):
                    with ui.user_errors():
                        delete_project(project.name)
                        ui.set_current_project(None)
                        st.rerun()
        st.caption(f"Workspace: `{workspace_dir()}`")

    with right:
        if project is None:
            st.subheader("Workflow")
            st.info("Open a project to see its progress through the workflow.")
        else:
            checklist(project)


def checklist(project, *, read: bool = False) -> None:
    st.subheader("Workflow")
    st.markdown(f"**{project.name}**")
    demo = [j for j in list_jobs(project.root, kind="demo") if j.is_active]
    if demo:
        _demo_progress(project, demo[0].id)
    for step in project.status():
        icon = OPTIONAL if step.optional and not step.done else DONE if step.done else TODO
        c1, c2 = st.columns([3, 2])
        c1.markdown(f"{icon} **{step.title}** — {step.detail}")
        if read and step.key != "analysis":
            continue
        if step.key in PAGES:
            page, title = PAGES[step.key]
            c2.page_link(page, label=f"Open {title}", icon=":material/arrow_forward:")


navigation = st.navigation(
    [
        st.Page(home, title="Home", icon=":material/home:", default=True),
        st.Page("pages/1_Data.py", title="Data", icon=":material/folder_open:", url_path="data"),
        st.Page("pages/2_Label.py", title="Label", icon=":material/brush:", url_path="label"),
        st.Page("pages/3_Ground_Truth.py", title="Ground truth", icon=":material/forest:", url_path="ground-truth"),
        st.Page("pages/4_Train.py", title="Train", icon=":material/model_training:", url_path="train"),
        st.Page("pages/5_Segment.py", title="Segment", icon=":material/layers:", url_path="segment"),
        st.Page("pages/6_Evaluate.py", title="Evaluate", icon=":material/fact_check:", url_path="evaluate"),
        st.Page("pages/7_3D.py", title="3D", icon=":material/view_in_ar:", url_path="3d"),
        st.Page("pages/8_Analysis.py", title="Analysis", icon=":material/analytics:", url_path="analysis"),
        st.Page("pages/9_Live.py", title="Live", icon=":material/sensors:", url_path="live"),
    ]
)
navigation.run()
