#!/usr/bin/python3
"""The web page in a real headless Chromium, against `healthgpt serve` on the demo model.

    /usr/bin/python3 tests/web/web_page_test.py --healthgpt build/bin/healthgpt --workdir build/test-web

Loopback only, bounded in time (an alarm stops everything after --deadline-s; the server and the
browser are stopped in every case). Steps:
  patient shares: sign in, open the consultation, choose the physician in "Share with a physician"
  (a name list), cancel the confirmation with Escape, confirm with the keyboard; the store has the
  share by the patient and its audit row.
  physician: sign in with a key (kept in sessionStorage, never in the URL), open the consultation the
  patient shared, upload a real CT DICOM, change the window (the preview's pixels change), scroll the
  slices of a multi-frame MR with the keyboard and the slider and those of a NIfTI volume, ask with the lung window and watch
  the answer stream (a MutationObserver records each state of the answer: more than one partial
  state, each a prefix of the next), correct the answer in place and find that correction in
  DATA_DIR/healthgpt.db (table feedback) with its audit row and under its answer in the history
  (the patient's key may not read it back); ask for an image generation and check
  the page says what the server answered (image, or a clear "not available" for 404/501).
  patient: sign in, see the "not a diagnosis" reminder, ask with an image, see the streamed answer
  end with the server's reminder, ask a follow-up in the same consultation.
  both: every form control has a label, focus is visible, no Content-Security-Policy violation in
  the console, no horizontal scrolling on a 390x844 phone viewport; screenshots (desktop and phone,
  full page) under WORKDIR/screenshots/.
Exit 77 (ctest: skipped) only when Chromium, chromedriver or selenium is missing, or when no
real DICOM file can be found (../shared/data, $HG_TESTDATA or Debian's python3-pydicom).
"""
import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from page_driver import SKIP, Page, find_browser, http, quit_browser, server_port, start_chromium, start_server, stop_server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))


class Deadline(Exception):
    pass


def find_first(paths):
    for p in paths:
        if p and os.path.isfile(p):
            return p
    return None


def find_under(root, name):
    if not root or not os.path.isdir(root):
        return None
    for d, _, files in os.walk(root):
        if name in files:
            return os.path.join(d, name)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--healthgpt", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--deadline-s", type=int, default=150)
    args = ap.parse_args()

    browser = find_browser()
    if not browser:
        return SKIP
    chromium, driver_bin = browser

    shared = os.environ.get("HEALTHGPT_SHARED_DATA", os.path.join(SOURCE, "..", "shared", "data"))
    dicom_dir = os.path.join(shared, "medical", "dicom")
    ct = find_first([os.path.join(dicom_dir, "CT1_UNC.explicit_little_endian.dcm"),
                     find_under(os.environ.get("HG_TESTDATA", os.path.join(SOURCE, "build", "testdata")), "CT_small.dcm"),
                     "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm"])
    if not ct:
        print(f"SKIP: no real CT DICOM: not in {dicom_dir}, $HG_TESTDATA (scripts/fetch-test-data.sh) or python3-pydicom")
        return SKIP
    multiframe = find_first([os.path.join(dicom_dir, "emri_small.dcm")])  # 10 frames: slice scrolling
    nifti = find_first([os.path.join(shared, "medical", "nifti", "FLAIR.nii.gz")])  # a brain MR volume
    photo = find_first([os.path.join(shared, "medical", "xray", "nih_cxr14_00000001_000.png")])

    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    shots = os.path.join(work, "screenshots")
    os.makedirs(shots)
    model, data = os.path.join(work, "demo"), os.path.join(work, "data")
    hg = os.path.abspath(args.healthgpt)
    run = lambda *a: subprocess.run([hg, *a], check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    run("make-demo-model", model)
    photo = photo or os.path.join(model, "example.png")
    doc_key = run("keys", "add", "--data-dir", data, "--role", "physician", "--name", "dr-web")
    pat_key = run("keys", "add", "--data-dir", data, "--role", "patient", "--name", "pat-web")

    def on_alarm(*_):
        raise Deadline(f"the test ran past its deadline of {args.deadline_s} s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline_s)

    log_path = os.path.join(work, "server.log")
    srv, log = start_server(hg, model, data, log_path)
    driver = None
    try:
        port = server_port(srv, log_path)
        base = f"http://127.0.0.1:{port}"

        # A consultation of the patient (a picture); the patient shares it with the physician
        # through the page below.
        st, body = http(port, "POST", "/v1/uploads?filename=chest.png", pat_key, open(photo, "rb").read(), "image/png")
        assert st == 201, (st, body)
        cid = json.loads(body)["consultation_id"]
        doc_id = json.loads(http(port, "GET", "/v1/me", doc_key)[1])["id"]
        pat_id = json.loads(http(port, "GET", "/v1/me", pat_key)[1])["id"]

        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import Select

        driver = start_chromium(chromium, driver_bin, work, extra_args=["--metrics-recording-only"], browser_log=True,
                                driver_log=os.path.join(work, "chromedriver.log"))
        page = Page(driver, shots)
        wait, by_id, js, no_error, screenshot = page.wait, page.by_id, page.js, page.no_error, page.screenshot

        def text_of(i):
            return by_id(i).text

        def wait_text(i, pattern, what):
            wait.until(lambda d: re.search(pattern, text_of(i)), f"{what}: #{i} never matched {pattern!r}")
            return text_of(i)

        def selected(i, what="text"):  # read in one go: the page re-renders its options
            return js("const s = document.getElementById(arguments[0]); const o = s.options[s.selectedIndex];"
                      "return o ? o[arguments[1]] : '';", i, what)

        # A checksum of what an <img> shows (the test reads the pixels; the page reports nothing).
        def pixels(img_id):
            return js("""const img = document.getElementById(arguments[0]);
                         if (!img.complete || !img.naturalWidth) return null;
                         const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                         const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                         const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0;
                         for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i] + 7 * d[i + 1]) % 1000000007;
                         return [c.width, c.height, h];""", img_id)

        def wait_preview(attr, value):
            wait.until(lambda d: by_id("preview").get_attribute("data-" + attr) == value and pixels("preview")
                       and by_id("preview").get_attribute("aria-busy") is None, f"preview with {attr}={value}")
            return pixels("preview")

        def check_labels():
            unlabeled = js("""return [...document.querySelectorAll('input, select, textarea')]
                  .filter(e => e.offsetParent !== null && e.type !== 'hidden')
                  .filter(e => !(e.id && document.querySelector('label[for="' + e.id + '"]')) && !e.getAttribute('aria-label')
                               && !e.closest('label'))
                  .map(e => e.id || e.outerHTML.slice(0, 60));""")
            assert not unlabeled, f"controls without a label: {unlabeled}"

        def check_focus_visible():
            js("document.getElementById('main').focus();")
            driver.switch_to.active_element.send_keys(Keys.TAB)
            style = js("const e = document.activeElement; const s = getComputedStyle(e); "
                       "return [e.tagName, e.id, s.outlineStyle, s.outlineWidth];")
            assert style[2] not in ("none", "") and style[3] != "0px", f"focus is not visible on {style}"

        def phone(on):
            if on:
                driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                       {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
            else:
                driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
            time.sleep(0.3)

        def check_phone_fits(view):
            # nothing may stick out of the 390 px screen (a long file name, a wide control...)
            wide = js("""return [...document.querySelectorAll('body *')].filter(e => e.getClientRects().length)
                           .map(e => [e.tagName + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''),
                                      Math.round(Math.max(e.getBoundingClientRect().right, e.getBoundingClientRect().left + e.scrollWidth))])
                           .filter(([_, r]) => r > 391);""")
            sw = js("return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);")
            assert sw <= 391 and not wide, f"{view}: the page is wider than a 390 px phone ({sw} px): {wide[:8]}"

        def sign_in(key, view):
            driver.get(base + "/")
            wait.until(lambda d: by_id("login-view").is_displayed())
            check_labels()
            by_id("key").send_keys(key)
            by_id("key").send_keys(Keys.ENTER)  # the keyboard signs in
            wait.until(lambda d: by_id(view).is_displayed() or by_id("error").is_displayed(), "sign-in")
            no_error()
            assert key not in driver.current_url, "the key must never be in a URL"
            assert js("return sessionStorage.getItem('healthgpt.key')") == key
            assert js("return localStorage.length") == 0

        # a wrong key: a clear message, no view, nothing kept
        driver.get(base + "/")
        wait.until(lambda d: by_id("login-view").is_displayed())
        by_id("key").send_keys("hgk_0123456789abcdef_" + "0" * 64)
        by_id("login-button").click()
        wait.until(lambda d: by_id("error").is_displayed(), "the refusal of a wrong key")
        assert "not accepted" in text_of("error") and "invalid or revoked API key" in text_of("error"), text_of("error")
        assert by_id("login-view").is_displayed() and not by_id("physician-view").is_displayed()
        assert js("return sessionStorage.getItem('healthgpt.key')") is None

        # ---------------------------------------------------------------- patient shares
        # The patient opens the consultation, chooses the physician from the list, confirms, and
        # the page says whom it is shared with; the store has the share by the patient, audited.
        sign_in(pat_key, "patient-view")
        assert by_id("share-box").is_displayed() is False, "nothing to share before a consultation is open"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#pat-consultations button[data-id='{cid}']"))
        driver.find_element(By.CSS_SELECTOR, f"#pat-consultations button[data-id='{cid}']").click()
        wait_text("share-with", r"Not shared with a physician yet", "the share box of the open consultation")
        check_labels()
        assert [o.text for o in Select(by_id("share-physician")).options] == ["dr-web"], "physicians' names only"
        by_id("share-button").click()
        wait.until(lambda d: by_id("share-confirm").is_displayed(), "the confirmation")
        assert "dr-web" in text_of("share-question") and f"#{cid}" in text_of("share-question")
        assert driver.switch_to.active_element.get_attribute("id") == "share-yes", "focus moves to the confirmation"
        driver.switch_to.active_element.send_keys(Keys.ESCAPE)  # the keyboard cancels: nothing shared
        wait.until(lambda d: by_id("share-form").is_displayed() and not by_id("share-confirm").is_displayed())
        assert json.loads(http(port, "GET", f"/v1/consultations/{cid}", pat_key)[1])["physician_ids"] == []
        by_id("share-button").click()
        wait.until(lambda d: by_id("share-confirm").is_displayed())
        by_id("share-yes").send_keys(Keys.ENTER)  # and confirms
        wait_text("share-with", r"Shared with dr-web\.", "the page says whom it is shared with")
        no_error()
        db = sqlite3.connect(f"file:{os.path.join(data, 'healthgpt.db')}?mode=ro", uri=True, timeout=10)
        shares = db.execute("SELECT physician_id, shared_by FROM consultation_shares WHERE consultation_id = ?", (cid,)).fetchall()
        share_audit = db.execute("SELECT count(*) FROM audit_log WHERE action = 'consultation.share' AND allowed = 1 "
                                 "AND user_id = ? AND target = ?", (pat_id, f"consultation:{cid}")).fetchone()[0]
        db.close()
        assert shares == [(doc_id, pat_id)] and share_audit == 1, (shares, share_audit)
        phone(True)
        check_phone_fits("patient sharing")
        phone(False)
        by_id("logout").click()
        wait.until(lambda d: by_id("login-view").is_displayed())

        # ---------------------------------------------------------------- physician
        sign_in(doc_key, "physician-view")
        assert text_of("who-role") == "physician" and text_of("who-name") == "dr-web"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#phys-consultations button[data-id='{cid}']"))
        assert len(Select(by_id("plugin")).options) >= 1 and Select(by_id("plugin")).first_selected_option.get_attribute("value") == "com"
        driver.find_element(By.CSS_SELECTOR, f"#phys-consultations button[data-id='{cid}']").click()
        wait_text("phys-current", rf"Consultation #{cid}", "open the shared consultation")
        wait_preview("window", "auto")  # the patient's picture

        # upload the real CT; change the window: the pixels change with it
        by_id("upload-file").send_keys(os.path.abspath(ct))
        by_id("upload-button").click()
        wait.until(lambda d: os.path.basename(ct) in selected("phys-uploads"), "CT upload")
        no_error()
        ct_upload = selected("phys-uploads", "value")
        auto = wait_preview("window", "auto")
        Select(by_id("window")).select_by_value("lung")
        lung = wait_preview("window", "lung")
        Select(by_id("window")).select_by_value("bone")
        bone = wait_preview("window", "bone")
        assert auto[:2] == lung[:2] == bone[:2] and len({auto[2], lung[2], bone[2]}) == 3, \
            f"the window presets must change the preview: {auto} {lung} {bone}"
        assert "window bone" in text_of("preview-caption")

        # a multi-frame MR: scroll its slices with the keyboard and the slider
        if multiframe:
            by_id("upload-file").send_keys(os.path.abspath(multiframe))
            by_id("upload-button").click()
            wait.until(lambda d: os.path.basename(multiframe) in selected("phys-uploads"))
            no_error()
            assert by_id("slice").is_enabled() and by_id("slice").get_attribute("max") == "9"
            mid = wait_preview("slice", "5")
            by_id("preview").send_keys(Keys.ARROW_UP)
            up = wait_preview("slice", "6")
            by_id("preview").send_keys(Keys.HOME)
            first = wait_preview("slice", "0")
            by_id("slice").send_keys(Keys.ARROW_RIGHT)  # the slider itself, by keyboard
            second = wait_preview("slice", "1")
            assert len({mid[2], up[2], first[2], second[2]}) == 4, "each slice shows a different image"
            assert "slice 2 of 10" in text_of("preview-caption")
        else:
            print("note: emri_small.dcm not found under ../shared/data: slice scrolling not exercised")
        if nifti:  # a NIfTI volume: its axial slices
            by_id("upload-file").send_keys(os.path.abspath(nifti))
            by_id("upload-button").click()
            wait.until(lambda d: os.path.basename(nifti) in selected("phys-uploads"), "NIfTI upload")
            no_error()
            last = str(int(by_id("slice").get_attribute("max")))
            assert int(last) > 10, f"a volume has many slices, the slider says {last}"
            middle = wait_preview("slice", str((int(last) + 1) // 2))
            by_id("preview").send_keys(Keys.END)
            end = wait_preview("slice", last)
            by_id("preview").send_keys(Keys.PAGE_DOWN)
            back = wait_preview("slice", str(int(last) - 10))
            assert len({middle[2], end[2], back[2]}) == 3, "each slice of the volume differs"
            n0 = js("return performance.getEntriesByType('resource').filter(e => e.name.includes('preview.png')).length;")
            by_id("preview").send_keys(*([Keys.ARROW_DOWN] * 8))  # fast steps: the last one wins
            wait_preview("slice", str(int(last) - 18))
            n = js("return performance.getEntriesByType('resource').filter(e => e.name.includes('preview.png')).length;") - n0
            assert 1 <= n <= 8, f"{n} preview requests for 8 steps"
            print(f"8 fast slice steps: {n} preview request(s)")
        else:
            print("note: FLAIR.nii.gz not found under ../shared/data: NIfTI slices not exercised")
        Select(by_id("phys-uploads")).select_by_value(ct_upload)
        Select(by_id("window")).select_by_value("lung")
        wait_preview("window", "lung")
        check_labels()
        check_focus_visible()

        # ask, and watch the answer stream: each DOM state of the answer is recorded as it happens
        js("""window.__states = []; const a = document.getElementById('answer');
              new MutationObserver(() => window.__states.push(a.textContent))
                .observe(a, {childList: true, characterData: true, subtree: true});""")
        by_id("max-tokens").clear()
        by_id("max-tokens").send_keys("200")
        by_id("question").send_keys("Is there a pneumothorax?")
        # The demo model answers 200 tokens in a few milliseconds, faster than a page can show
        # them one by one; Chromium's own network throttling (a 16 KB/s line, as on a poor
        # mobile connection) lets the stream arrive the way a real model's does.
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                               {"offline": False, "latency": 0, "downloadThroughput": 16 * 1024, "uploadThroughput": -1})
        by_id("ask-button").click()
        wait_text("answer-status", r"Answer complete", "the streamed answer")
        driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                               {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
        no_error()
        answer = by_id("answer").get_attribute("textContent")
        states = [s for s in js("return window.__states;") if s]
        distinct = list(dict.fromkeys(states))
        assert len(distinct) >= 3, f"expected the answer to appear in several steps, saw {len(distinct)}: {distinct[:3]}"
        for a, b in zip(distinct, distinct[1:]):
            assert b.startswith(a), "each streamed state extends the one before"
        assert distinct[-1] == answer and answer.strip()
        chunks = int(by_id("answer").get_attribute("data-chunks"))
        assert chunks >= len(distinct) - 1, (chunks, len(distinct))
        print(f"streaming: {chunks} content chunks, {len(distinct)} distinct states seen by the DOM")
        answer_id = int(by_id("answer").get_attribute("data-answer-id"))
        st, body = http(port, "GET", f"/v1/consultations/{cid}", doc_key)
        stored = {a["id"]: a["text"] for a in json.loads(body)["answers"]}
        # the store keeps control characters as U+FFFD (server.cpp storable()); the page shows the text as generated
        storable = "".join("\ufffd" if (ord(c) < 0x20 and c not in "\t\n\r") or c == "\x7f" else c for c in answer)
        assert stored.get(answer_id) == storable, "the page showed what the server stored (a physician gets no reminder)"
        wait.until(lambda d: "Is there a pneumothorax?" in text_of("phys-history"), "the history lists the question")
        assert os.path.basename(ct) in text_of("preview-caption") and "window lung" in text_of("preview-caption"), \
            "the image asked about stays on screen: " + text_of("preview-caption")
        screenshot("physician-desktop")

        # correct it in place; the correction is in the store
        by_id("correct-button").click()
        assert by_id("correction").get_attribute("value") == answer, "the editor starts from the answer"
        assert driver.switch_to.active_element.get_attribute("id") == "correction"
        correction = f"No pneumothorax; lungs are clear (web test {os.getpid()})."
        by_id("correction").clear()
        by_id("correction").send_keys(correction)
        Select(by_id("rating")).select_by_value("2")
        by_id("comment").send_keys("checked in the browser")
        by_id("save-correction").click()
        wait_text("feedback-status", r"Correction saved \(feedback #\d+", "saving the correction")
        no_error()
        assert by_id("answer").text == correction
        fid = int(re.search(r"feedback #(\d+)", text_of("feedback-status")).group(1))
        db = sqlite3.connect(f"file:{os.path.join(data, 'healthgpt.db')}?mode=ro", uri=True, timeout=10)
        row = db.execute("SELECT answer_id, physician_id, rating, correction, comment FROM feedback WHERE id = ?", (fid,)).fetchone()
        audit = db.execute("SELECT count(*) FROM audit_log WHERE action = 'feedback.add' AND allowed = 1 AND user_id = ?",
                           (doc_id,)).fetchone()[0]
        db.close()
        assert row == (answer_id, doc_id, 2, correction, "checked in the browser"), row
        assert audit == 1, audit
        # the history shows it under its answer (GET /v1/answers/{id}/feedback); the patient may not read it
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#phys-history ul.feedback li[data-feedback-id='{fid}']"),
                   "the correction in the history")
        shown = driver.find_element(By.CSS_SELECTOR, f"#phys-history ul.feedback li[data-feedback-id='{fid}']").text
        assert correction in shown and "by you" in shown and "rating 2 of 5" in shown and "checked in the browser" in shown, shown
        assert http(port, "GET", f"/v1/answers/{answer_id}/feedback", pat_key)[0] == 403, "patients do not read corrections"
        print(f"correction stored: feedback {fid} on answer {answer_id}, shown in the history")

        # image generation beside the input; the page says what the server answered
        Select(by_id("gen-task")).select_by_value("ct2mri")
        by_id("gen-button").click()
        wait.until(lambda d: by_id("gen-button").is_enabled() and not text_of("gen-status").startswith("Generating"),
                   "image generation to finish")
        gst, gbody = http(port, "POST", "/v1/images/generations", doc_key,
                          {"task": "ct2mri", "upload_id": int(ct_upload), "window": "lung", "stream": False})
        if gst in (404, 501):
            assert "not available" in text_of("gen-status") and str(gst) in text_of("gen-status"), text_of("gen-status")
            print(f"generation: the server answered {gst}; the page says so")
        elif gst == 200:
            no_error()
            assert by_id("generated-figure").is_displayed() and pixels("generated"), "the generated image is shown"
            assert by_id("preview").is_displayed() and os.path.basename(ct) in text_of("preview-caption"), "beside the input"
            a, b = by_id("preview").rect, by_id("generated").rect
            assert abs(a["y"] - b["y"]) < 2 and b["x"] > a["x"] + a["width"] - 1, f"side by side: {a} {b}"
            print("generation: image shown beside the input")
        else:
            msg = json.loads(gbody)["error"]["message"]
            wait.until(lambda d: by_id("error").is_displayed())
            assert msg in by_id("error").text, (msg, by_id("error").text)
            print(f"generation: the server answered {gst} ({msg}); the page shows it")
        screenshot("physician-desktop-after")
        phone(True)
        check_phone_fits("physician")
        screenshot("physician-phone")
        phone(False)

        by_id("logout").click()
        wait.until(lambda d: by_id("login-view").is_displayed())
        assert js("return sessionStorage.getItem('healthgpt.key')") is None

        # ---------------------------------------------------------------- patient
        sign_in(pat_key, "patient-view")
        reminder = by_id("reminder")
        assert reminder.is_displayed() and "not a diagnosis" in reminder.text.lower(), reminder.text
        assert not by_id("physician-view").is_displayed()
        check_labels()
        by_id("pat-new").click()
        by_id("chat-image").send_keys(os.path.abspath(photo))
        by_id("chat-input").send_keys("What does my chest X-ray show?")
        by_id("chat-input").send_keys(Keys.CONTROL, Keys.ENTER)  # send by keyboard
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chat li.assistant")) == 1
                   and "not a diagnosis" in d.find_element(By.CSS_SELECTOR, "#chat li.assistant").text
                   and by_id("chat-send").is_enabled(), "the patient's streamed answer with the reminder")
        no_error()
        wait.until(lambda d: js("const i = document.querySelector('#chat li.user img'); return i && i.naturalWidth > 0;"),
                   "the patient's picture in the chat")
        by_id("chat-input").send_keys("Should I worry?")
        by_id("chat-send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chat li.assistant")) == 2 and by_id("chat-send").is_enabled()
                   and "not a diagnosis" in d.find_elements(By.CSS_SELECTOR, "#chat li.assistant")[1].text, "the follow-up")
        no_error()
        st, body = http(port, "GET", "/v1/consultations", pat_key)
        mine = json.loads(body)["data"]
        newest = max(c["id"] for c in mine)
        assert newest != cid and len(mine) == 2, mine
        v = json.loads(http(port, "GET", f"/v1/consultations/{newest}", pat_key)[1])
        assert [m["text"] for m in v["messages"]] == ["What does my chest X-ray show?", "Should I worry?"], v["messages"]
        assert len(v["uploads"]) == 1 and len(v["answers"]) == 2
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#pat-consultations button[data-id='{newest}']"))
        # a reload keeps the tab signed in (sessionStorage); the consultation reopens from the store
        driver.refresh()
        wait.until(lambda d: by_id("patient-view").is_displayed() and
                   d.find_elements(By.CSS_SELECTOR, f"#pat-consultations button[data-id='{newest}']"), "signed in after a reload")
        driver.find_element(By.CSS_SELECTOR, f"#pat-consultations button[data-id='{newest}']").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chat li.user")) == 2
                   and len(d.find_elements(By.CSS_SELECTOR, "#chat li.assistant")) == 2, "the reopened consultation")
        shown = [e.get_attribute("textContent") for e in driver.find_elements(By.CSS_SELECTOR, "#chat li.assistant .text")]
        assert shown == [a["text"] for a in v["answers"]], "the reopened chat shows the stored answers"
        check_focus_visible()
        screenshot("patient-desktop")
        phone(True)
        check_phone_fits("patient")
        assert js("const r = document.getElementById('reminder').getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight;"), \
            "the reminder is on the phone's first screen"
        screenshot("patient-phone")
        phone(False)

        # the operator's CLI shares too (by name; audited as local-operator), and refuses a patient
        cli_doc = run("keys", "add", "--data-dir", data, "--role", "physician", "--name", "dr-cli")
        assert cli_doc.startswith("hgk_")
        out = run("consultations", "share", "--data-dir", data, "--consultation", str(cid), "--physician", "dr-cli")
        assert f"consultation {cid} is shared with physician(s) {doc_id}, " in out, out
        bad = subprocess.run([hg, "consultations", "share", "--data-dir", data, "--consultation", str(cid),
                              "--physician", "pat-web"], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and "no physician named 'pat-web'" in bad.stderr, (bad.returncode, bad.stderr)
        db = sqlite3.connect(f"file:{os.path.join(data, 'healthgpt.db')}?mode=ro", uri=True, timeout=10)
        rows = db.execute("SELECT count(*) FROM consultation_shares WHERE consultation_id = ? AND shared_by IS NULL", (cid,)).fetchone()[0]
        db.close()
        assert rows == 1, rows

        logs = driver.get_log("browser")
        csp = [l["message"] for l in logs if "Content Security Policy" in l["message"] or "Refused to" in l["message"]]
        assert not csp, f"Content-Security-Policy violations: {csp}"
        expected = ["/v1/images/generations", "/v1/me - Failed to load resource: the server responded with a status of 401"]
        bad = [l["message"] for l in logs if l["level"] == "SEVERE" and not any(e in l["message"] for e in expected)]
        assert not bad, f"browser errors: {bad}"
        print(f"ok: web page in {driver.capabilities.get('browserVersion')} against 127.0.0.1:{port}; screenshots in {shots}")
        return 0
    finally:
        signal.alarm(0)
        quit_browser(driver)
        stop_server(srv)
        log.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (AssertionError, Deadline) as e:
        print("FAIL:", e)
        sys.exit(1)
