"""Reactomo home: open, create or delete a project, load the demo, and see where the workflow stands."""

from __future__ import annotations

import streamlit as st

import ui
from core.workflow.data import create_demo_project
from core.workflow.project import create_project, delete_project, list_projects, workspace_dir

#: Workflow pages that exist so far, by checklist key (later steps get their page in later releases).
PAGES = {"data": "pages/1_Data.py", "labels": "pages/2_Label.py", "ground_truth": "pages/3_Ground_Truth.py",
         "model": "pages/4_Train.py", "segmentation": "pages/5_Segment.py", "evaluation": "pages/6_Evaluate.py",
         "analysis": "pages/8_Analysis.py"}
DONE, TODO = ":green[:material/check_circle:]", ":gray[:material/radio_button_unchecked:]"


def home() -> None:
    ui.page_setup("Home")
    project = ui.current_project()
    ui.sidebar_project(project)

    st.title("Reactomo")
    st.markdown(
        "Phase volumes over time from time-resolved X-ray micro-CT of a reacting rock, "
        "checked against the chemistry of the reaction itself (the **internal standard**)."
    )

    left, right = st.columns([2, 3], gap="large")

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
                     help="A generated dehydrating-gypsum experiment with known truth (10 steps)."):
            bar = st.progress(0.0, text="Preparing the demo experiment")
            with ui.user_errors():
                demo = create_demo_project("demo", if_missing=True, on_progress=ui.progress_callback(bar))
                ui.set_current_project(demo.name)
                bar.empty()
                st.rerun()

        with st.expander("New project", icon=":material/add:"):
            with st.form("new_project", clear_on_submit=False, border=False):
                new_name = st.text_input("Name", placeholder="e.g. gypsum_run_2026_11", max_chars=64)
                if st.form_submit_button("Create project"):
                    with ui.user_errors():
                        created = create_project(new_name)
                        ui.set_current_project(created.name)
                        st.rerun()

        if project is not None:
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
        st.subheader("Workflow")
        if project is None:
            st.info("Open a project to see its progress through the workflow.")
        else:
            st.markdown(f"**{project.name}**")
            for step in project.status():
                icon = DONE if step.done else TODO
                c1, c2 = st.columns([3, 2])
                c1.markdown(f"{icon} **{step.title}** — {step.detail}")
                if step.key in PAGES:
                    c2.page_link(PAGES[step.key], label=f"Open {step.title}", icon=":material/arrow_forward:")
                else:
                    c2.caption("coming in a later release")


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
