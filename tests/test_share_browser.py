"""The read-only view in a real browser (issue 15, part 3): a share link shows the results and nothing that changes
the project; on a team server a project URL without the edit key is read-only too; a revoked link stops working."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import browser_page, launch_streamlit, settle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
#: Words of the buttons that change something; none may show in the read-only view.
ACTIONS = ("Run", "Start", "Save", "Delete", "Train", "Segment", "Accept", "Export", "Import", "Generate", "Upload",
           "Load demo", "Create", "Clear", "Undo", "Stop", "Render", "Evaluate", "Revoke", "New share link")
PAGES = ("Data", "Label", "Ground truth", "Train", "Segment", "Evaluate", "3D", "Live")


def _body(page, waiting_for: str) -> str:
    """The page's text once ``waiting_for`` shows (a rerun after a navigation can outlast settle's first look)."""
    settle(page)
    page.get_by_text(waiting_for).first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)
    return page.inner_text("body")


def _buttons(page) -> list[str]:
    return [b.inner_text().strip() for b in page.locator('[data-testid="stMain"] button').all()]


def test_a_share_link_is_read_only_and_a_team_server_needs_the_edit_key(tmp_path, monkeypatch):
    from core.analysis.results import AnalysisConfig
    from core.imaging.synthetic import DemoConfig
    from core.workflow.access import create_share_link, edit_key, revoke_share_links
    from core.workflow.analysis import analyse_segmentation
    from core.workflow.data import create_demo_project
    from core.workflow.paths import saved_analysis
    from core.workflow.segment import segment_project

    ws = tmp_path / "workspace"
    ws.mkdir()
    p = create_demo_project("demo", workspace=ws, config=DemoConfig(steps=4, shape=(16, 64, 72), seed=3))
    segment_project(p, ROOT / "models" / "demo-unet", name="s1", steps=[0, 1, 2, 3])
    analyse_segmentation(p, "s1", config=AnalysisConfig(n_boot=50))
    verdict = saved_analysis(p, "s1")["summary"]["verdict"]
    token = create_share_link(p)
    key = edit_key(p)
    monkeypatch.setenv("REACTOMO_TEAM", "1")  # a server configured for a team

    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit.log") as url, \
            browser_page(height=2400) as page:
        page.goto(url)
        settle(page)
        # 1. the share link: the results, no control that changes anything, on every page
        page.goto(f"{url}/?project=demo&share={token}")
        body = _body(page, "Read-only view")
        assert "Read-only view" in body and "opened with a share link" in body, body[:1500]
        assert not any(a in b for b in _buttons(page) for a in ACTIONS), _buttons(page)
        for absent in ("Load demo experiment", "New project", "Delete project", "Import a project", "Export the project"):
            assert absent not in body
        page.get_by_role("link", name="See the results (Analysis)").click()
        body = _body(page, "Molar evolution")
        assert "Read-only view" in body and "Run the analysis" not in body and "Bootstrap resamples" not in body
        assert verdict["sentence"].split(";")[0][:40] in body.replace("\n", " ") or "Verdict" in body, body[:3000]
        assert not any(a in b for b in _buttons(page) for a in ACTIONS), _buttons(page)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "shared-analysis.png"), full_page=True)
        for path in PAGES:  # through the sidebar, as a collaborator moves (the same session)
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=path, exact=True).click()
            body = _body(page, "not part of the read-only view")
            assert "not part of the read-only view" in body, (path, body[:800])
            assert page.locator('[data-testid="stMain"] input[type="file"]').count() == 0, path
            assert not any(a in b for b in _buttons(page) for a in ACTIONS), (path, _buttons(page))
        # a reload (a new session) keeps the link's rights, and no more: the URL carries the token
        assert "share=" in page.url and "project=demo" in page.url, page.url
        page.reload()
        assert "not part of the read-only view" in _body(page, "not part of the read-only view")
        # 2. revoked: the same session stops at its next page
        revoke_share_links(p)
        page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Analysis", exact=True).click()
        body = _body(page, "This share link is not valid")
        assert "This share link is not valid" in body and "Molar evolution" not in body

    with launch_streamlit(ws, data_root=tmp_path, log_path=tmp_path / "streamlit2.log") as url, \
            browser_page(height=1600) as page:
        # 3. a team server: the project URL alone is read-only; the edit link gives the controls back
        page.goto(url)
        settle(page)
        page.goto(f"{url}/?project=demo")
        body = _body(page, "Read-only view")
        assert "Read-only view" in body and "no edit key" in body and "Delete project" not in body
        page.goto(f"{url}/segment?project=demo")
        assert "not part of the read-only view" in _body(page, "not part of the read-only view")
        page.goto(f"{url}/?project=demo&key={key}")
        body = _body(page, "Delete project")
        assert "Read-only view" not in body and "Delete project" in body and "Share a read-only link" in body
        page.goto(f"{url}/analysis?project=demo&key={key}")
        assert "Run the analysis" in _body(page, "Run the analysis")
        ctx = page.context.browser.new_context(viewport={"width": 1500, "height": 1200})  # another user, wrong key
        other = ctx.new_page()
        other.goto(url)
        settle(other)
        other.goto(f"{url}/?project=demo&key=not-the-key")
        assert "Read-only view" in _body(other, "Read-only view")
        ctx.close()
