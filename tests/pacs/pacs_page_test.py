#!/usr/bin/python3
"""The web page's PACS panel in a real headless Chromium, against a real Orthanc (started and
loaded by tests/pacs/pacs_test.py, which runs this script and passes the Orthanc it loaded).

    /usr/bin/python3 tests/pacs/pacs_page_test.py --healthgpt BIN --model DEMO_MODEL --workdir DIR \
        --dicomweb http://127.0.0.1:PORT/dicom-web --orthanc-port PORT --patient ID --study UID --series UID

A patient's consultation is shared with a physician through the API; the physician signs in on the
page, searches the PACS by patient ID, picks the study and its CT series, imports it into the
consultation, scrolls its slices (the preview shows each instance's upload in turn; the three
CT slices the driver loads are copies of one image, so their pixels are the same), asks, watches the answer stream, sends the
result to the PACS, and Orthanc's own REST API then shows the new SR series in the study, holding
one Basic Text SR. Screenshots (desktop, phone) under WORKDIR/screenshots. Exit 77 only when
Chromium, chromedriver or selenium is missing; 1 on any failure. Bounded by --deadline-s.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

# The browser helpers shared with the web page's own test (tests/web/page_driver.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "web"))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from page_driver import SKIP, Page, find_browser, http, quit_browser, server_port, start_chromium, start_server, stop_server  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    for a in ("--healthgpt", "--model", "--workdir", "--dicomweb", "--orthanc-port", "--patient", "--study", "--series"):
        ap.add_argument(a, required=True)
    ap.add_argument("--deadline-s", type=int, default=60)
    args = ap.parse_args()

    browser = find_browser()
    if not browser:
        return SKIP
    chromium, driver_bin = browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    shots = os.path.join(work, "screenshots")
    os.makedirs(shots)
    data = os.path.join(work, "data")
    hg = os.path.abspath(args.healthgpt)
    run = lambda *a: subprocess.run([hg, *a], check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    doc_key = run("keys", "add", "--data-dir", data, "--role", "physician", "--name", "dr-pacs")
    pat_key = run("keys", "add", "--data-dir", data, "--role", "patient", "--name", "pat-pacs")
    cfg = os.path.join(work, "pacs.json")
    with open(cfg, "w") as f:
        json.dump({"pacs": [{"name": "orthanc-ci", "url": args.dicomweb, "timeout_s": 20}]}, f)
    oport = int(args.orthanc_port)

    def orthanc(path, body=None):
        st, b = http(oport, "POST" if body is not None else "GET", path, body=body, ctype="text/plain")
        assert st == 200, (path, st, b[:200])
        return json.loads(b)

    def on_alarm(*_):
        raise TimeoutError(f"the PACS page test ran past its deadline of {args.deadline_s} s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.deadline_s)

    log_path = os.path.join(work, "server.log")
    srv, log = start_server(hg, args.model, data, log_path, ["--pacs-config", cfg])
    driver = None
    t0 = time.time()
    try:
        port = server_port(srv, log_path)

        # The patient's consultation (a first question), shared with the physician through the API.
        st, body = http(port, "POST", "/v1/chat/completions", pat_key,
                        {"messages": [{"role": "user", "content": "My doctor will look at my CT."}], "max_tokens": 4})
        assert st == 200, (st, body[:300])
        cid = json.loads(body)["consultation_id"]
        doc_id = json.loads(http(port, "GET", "/v1/me", doc_key)[1])["id"]
        st, body = http(port, "POST", f"/v1/consultations/{cid}/shares", pat_key, {"physician_id": doc_id})
        assert st in (200, 201), (st, body[:300])

        study_id = orthanc("/tools/lookup", args.study.encode())[0]["ID"]
        sr_before = {s["ID"] for s in orthanc(f"/studies/{study_id}/series") if s["MainDicomTags"].get("Modality") == "SR"}

        driver = start_chromium(chromium, driver_bin, work)
        page = Page(driver, shots)
        wait, by_id, js, no_error, screenshot = page.wait, page.by_id, page.js, page.no_error, page.screenshot

        def wait_text(i, pattern, what):
            wait.until(lambda d: re.search(pattern, by_id(i).text) or by_id("error").is_displayed(),
                       f"{what}: #{i} never matched {pattern!r}")
            no_error()
            return by_id(i).text

        def pixels():
            return js("""const img = document.getElementById('preview');
                         if (!img.complete || !img.naturalWidth) return null;
                         const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;
                         const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                         const d = g.getImageData(0, 0, c.width, c.height).data; let h = 0;
                         for (let i = 0; i < d.length; i += 4) h = (h * 31 + d[i]) % 1000000007;
                         return [img.dataset.uploadId, h];""")

        def wait_preview(upload_id):
            wait.until(lambda d: by_id("preview").get_attribute("data-upload-id") == upload_id and
                       by_id("preview").get_attribute("aria-busy") is None and pixels(), f"the preview of upload {upload_id}")
            return pixels()

        def check_labels():
            unlabeled = js("""return [...document.querySelectorAll('#pacs-box input, #pacs-box select')]
                  .filter(e => e.offsetParent !== null && !(e.id && document.querySelector('label[for="' + e.id + '"]')))
                  .map(e => e.id || e.outerHTML.slice(0, 60));""")
            assert not unlabeled, f"PACS controls without a label: {unlabeled}"

        # sign in as the physician; the PACS panel is there (the server has one PACS), naming it only
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: by_id("login-view").is_displayed())
        by_id("key").send_keys(doc_key + Keys.ENTER)
        wait.until(lambda d: by_id("pacs-box").is_displayed() or by_id("error").is_displayed(), "the PACS panel")
        no_error()
        assert [o.text for o in Select(by_id("pacs-name")).options] == ["orthanc-ci"]
        assert args.dicomweb not in driver.page_source, "the PACS address must not be on the page"
        check_labels()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#phys-consultations button[data-id='{cid}']"))
        driver.find_element(By.CSS_SELECTOR, f"#phys-consultations button[data-id='{cid}']").click()
        wait_text("phys-current", rf"Consultation #{cid}", "open the shared consultation")

        # search by patient ID (the keyboard submits), pick the study, then the CT series
        by_id("pacs-patient").send_keys(args.patient + Keys.ENTER)
        wait_text("pacs-status", r"stud(y|ies) found", "the study search")
        studies = driver.find_elements(By.CSS_SELECTOR, "#pacs-studies button")
        pick = [b for b in studies if b.get_attribute("data-study-uid") == args.study]
        assert len(pick) == 1, f"the CT study among the results ({len(studies)} found)"
        pick[0].send_keys(Keys.ENTER)
        wait_text("pacs-status", r"series in the study", "the series of the study")
        series = [b for b in driver.find_elements(By.CSS_SELECTOR, "#pacs-series button")
                  if b.get_attribute("data-series-uid") == args.series]
        assert len(series) == 1 and series[0].get_attribute("data-modality") == "CT", "the CT series is listed"
        series[0].click()
        assert by_id("pacs-import").is_enabled()
        by_id("pacs-import").click()
        wait_text("pacs-status", r"Imported 3 image\(s\) of the CT series", "the import")
        v = json.loads(http(port, "GET", f"/v1/consultations/{cid}", doc_key)[1])
        imported = [u for u in v["uploads"] if u["image"].get("series_uid") == args.series]
        assert len(imported) == 3, f"the consultation holds the 3 CT instances as uploads (got {len(imported)})"

        # scroll the slices of the imported series: the slider goes through its 3 images
        assert by_id("slice").is_enabled() and by_id("slice").get_attribute("max") == "2"
        assert "2 of 3" in by_id("slice-label").text, by_id("slice-label").text
        ids = [str(u["id"]) for u in imported]
        mid = wait_preview(ids[1])
        by_id("preview").send_keys(Keys.ARROW_DOWN)  # the keyboard on the image steps one slice
        first = wait_preview(ids[0])
        assert "1 of 3" in by_id("slice-label").text and "image 1 of 3 of the series" in by_id("preview-caption").text
        by_id("preview").send_keys(Keys.END)
        last = wait_preview(ids[2])
        assert mid[0] != first[0] != last[0], (mid, first, last)
        print(f"ok   slices scrolled: uploads {first[0]}, {mid[0]}, {last[0]} (pixel sums {first[1]}, {mid[1]}, {last[1]})")

        # ask: the answer streams in; then "Send result to PACS"
        assert not by_id("pacs-send-box").is_displayed(), "nothing to send before an answer"
        by_id("question").send_keys("Is there a fracture?")
        by_id("ask-button").click()
        wait_text("answer-status", r"Answer complete", "the streamed answer")
        chunks = int(by_id("answer").get_attribute("data-chunks") or "0")
        assert chunks >= 1 and by_id("answer").text.strip(), "the answer arrived in parts"
        wait.until(lambda d: by_id("pacs-send-box").is_displayed(), "the Send result to PACS button")
        screenshot("pacs-desktop")
        by_id("pacs-send").click()
        msg = wait_text("pacs-send-status", r"^(Sent|Not sent)", "the result of sending to the PACS")
        assert msg.startswith("Sent:"), msg
        sr_series_uid = by_id("pacs-send-status").get_attribute("data-sr-series-uid")

        # Orthanc's own API: a new SR series in the study, holding one Basic Text SR
        after = [s for s in orthanc(f"/studies/{study_id}/series") if s["MainDicomTags"].get("Modality") == "SR"]
        new = [s for s in after if s["ID"] not in sr_before]
        assert len(new) == 1 and new[0]["MainDicomTags"].get("SeriesInstanceUID") == sr_series_uid, \
            f"Orthanc shows the new SR series {sr_series_uid} in the study (new: {new})"
        inst = orthanc(f"/instances/{new[0]['Instances'][0]}/simplified-tags")
        assert len(new[0]["Instances"]) == 1 and inst.get("SOPClassUID") == "1.2.840.10008.5.1.4.1.1.88.11", inst.get("SOPClassUID")
        print(f"ok   Orthanc holds the page's result: SR series {sr_series_uid} in study {args.study}")

        # phone layout: nothing wider than a 390 px screen
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
        time.sleep(0.3)
        sw = js("return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);")
        screenshot("pacs-phone")
        assert sw <= 391, f"the page with the PACS panel is wider than a 390 px phone ({sw} px)"
        leaked = [k for k in (doc_key, pat_key) if k in open(log_path).read()]
        assert not leaked, "a key in the server's log"
        print(f"ok   PACS page test passed in {time.time() - t0:.1f} s; screenshots in {shots}")
        return 0
    except Exception as e:  # noqa: BLE001 - one report line, the screenshot for the record
        print(f"FAIL PACS page test: {type(e).__name__}: {e}")
        if driver:
            try:
                driver.save_screenshot(os.path.join(shots, "pacs-failure.png"))
            except Exception:  # noqa: BLE001
                pass
        print(open(log_path).read()[-1500:])
        return 1
    finally:
        signal.alarm(0)
        quit_browser(driver)
        stop_server(srv)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
