"""The README picture: the saved Explorer of the executed quickstart on the built site, a token clicked.

    make docs && .venv/bin/python docs/explorer_screenshot.py \\
        file://$PWD/docs/_build/html/notebooks/01_quickstart.html docs/_static/explorer.png terrific

Chromium (/usr/bin/chromium) via Playwright, every request other than file:/data: aborted: what it shows is
the offline player drawing the saved views, no kernel behind them.
"""
import sys
from playwright.sync_api import sync_playwright

page_url, out = sys.argv[1], sys.argv[2]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file:") or r.request.url.startswith("data:") else r.abort())
    page.goto(page_url)
    page.wait_for_timeout(4000)
    outs = page.locator(".cell_output")
    print("outputs", outs.count())
    # the Explorer cell is the one whose source creates widgets.Explorer
    cells = page.locator("div.cell")
    target = None
    for i in range(cells.count()):
        if "widgets.Explorer(" in cells.nth(i).inner_text():
            target = cells.nth(i).locator(".cell_output")
    page.add_style_tag(content=".bd-header, .bd-header-announcement {display:none !important}")
    target.scroll_into_view_if_needed()
    if len(sys.argv) > 3:  # click a token of the flow's strip: its paths light up (offline player, no kernel)
        tok = target.get_by_text(sys.argv[3], exact=True)
        print("tokens named", sys.argv[3], tok.count())
        tok.nth(tok.count() - 1).click()
        page.wait_for_timeout(1000)
    page.wait_for_timeout(1500)
    target.screenshot(path=out)
    browser.close()
