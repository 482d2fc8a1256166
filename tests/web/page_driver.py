"""What the browser tests of the web page share (tests/web/web_page_test.py, tests/pacs/pacs_page_test.py):
the loopback HTTP call, finding Chromium + chromedriver + selenium (or the skip), `healthgpt serve`
on an ephemeral port with its log, a headless Chromium, and the page helpers every step uses.
Standard library and Debian's python3-selenium only (/usr/bin/python3)."""
import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request

SKIP = 77  # ctest's SKIP_RETURN_CODE


def http(port, method, path, key=None, body=None, ctype="application/json"):
    """One request to 127.0.0.1:PORT; a dict or list body goes as JSON. Returns (status, body bytes)."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def find_browser():
    """(chromium, chromedriver) when both and selenium are installed; otherwise prints the SKIP line
    naming what is missing and returns None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.isfile("/usr/bin/chromedriver") else None)
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
    if not chromium or not driver_bin or webdriver is None:
        missing = [n for n, ok in [("chromium", chromium), ("chromium-driver", driver_bin), ("python3-selenium", webdriver)] if not ok]
        print("SKIP: " + ", ".join(missing) + " not installed (scripts/install-deps.sh installs them)")
        return None
    return chromium, driver_bin


def start_server(hg, model, data, log_path, extra=()):
    """`healthgpt serve` on 127.0.0.1, an ephemeral port, with its output in log_path: (process, log file)."""
    log = open(log_path, "w")
    srv = subprocess.Popen([hg, "serve", "-m", model, "--data-dir", data, "--host", "127.0.0.1", "--port", "0",
                            "--timeout-s", "60", *extra], stderr=log, stdout=log)
    return srv, log


def server_port(srv, log_path):
    """The port the server reports in its log (within 30 s); fails the test if it never does."""
    port = None
    for _ in range(300):
        m = re.search(r"http://127\.0\.0\.1:(\d+)", open(log_path).read())
        if m:
            port = int(m.group(1))
            break
        if srv.poll() is not None:
            break
        time.sleep(0.1)
    assert port, "the server did not report its port: " + open(log_path).read()[-2000:]
    return port


def stop_server(srv):
    srv.terminate()
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()
        srv.wait()


def start_chromium(chromium, driver_bin, work, extra_args=(), browser_log=False, driver_log=None):
    """A headless Chromium (1280x1000, a profile under WORK) driven by chromedriver; browser_log keeps
    the console for driver.get_log("browser"); driver_log: chromedriver's own log file."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", *extra_args,
              f"--user-data-dir={os.path.join(work, 'chromium-profile')}"]:
        opts.add_argument(a)
    if browser_log:
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if driver_log is None:
        service = Service(executable_path=driver_bin)
    elif "log_output" in Service.__init__.__code__.co_varnames:  # selenium >= 4.11
        service = Service(executable_path=driver_bin, log_output=driver_log)
    else:
        service = Service(executable_path=driver_bin, log_path=driver_log)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def quit_browser(driver):
    if driver is None:
        return
    try:
        driver.quit()
    except Exception as e:  # noqa: BLE001 - the browser may be gone already
        print("note: closing the browser:", e)


class Page:
    """The page in a driver: elements by id, scripts, waits (30 s), the error box, screenshots."""

    def __init__(self, driver, shots):
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.shots = shots
        self.wait = WebDriverWait(driver, 30)

    def by_id(self, i):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, i)

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def no_error(self):
        e = self.by_id("error")
        assert not e.is_displayed(), "the page shows an error: " + e.text

    def screenshot(self, name):
        """The whole page (beyond the viewport) as WORKDIR/screenshots/NAME.png."""
        r = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        with open(os.path.join(self.shots, name + ".png"), "wb") as f:
            f.write(base64.b64decode(r["data"]))
