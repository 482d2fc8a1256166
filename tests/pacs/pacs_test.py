#!/usr/bin/python3
"""PACS integration against a real Orthanc (Debian's orthanc + orthanc-dicomweb), end to end.

Starts three throw-away Orthancs with scripts/orthanc.sh (A: the test PACS; B: with basic
authentication; C: a copy stopped in the middle of a transfer), a silent server (timeouts) and a
fault-injecting proxy in front of A and C, all on 127.0.0.1; loads real DICOM files from the shared
data (a 3-slice CT series made from CT1_UNC by giving two copies new SOP instance UIDs, and the
10-frame MR emri_small); then runs
  1. the in-process client tests (test_unit --gtest_filter=PacsOrthanc.*) with the URLs in the env,
  2. `healthgpt ask --pacs ... --pacs-store` on a demo model: the SR and the SC are in the study
     (Orthanc's REST API), their references resolve, pydicom reads them,
  3. the CLI's faults: 401, a silent server, Orthanc stopped mid-transfer, a part the decoder
     refuses — each exit 1 with a clear message, no temporary files left, nothing stored.
Everything it started is stopped at the end. Exit 77 (skip) without Orthanc, pydicom or the data.
"""
import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

SKIP = 77


def skip(msg):
    print("SKIP: " + msg)
    sys.exit(SKIP)


ap = argparse.ArgumentParser()
ap.add_argument("--healthgpt", required=True)
ap.add_argument("--test-unit", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--repo", required=True)
args = ap.parse_args()

if not os.access("/usr/sbin/Orthanc", os.X_OK):
    skip("Orthanc is not installed (scripts/install-deps.sh: orthanc, orthanc-dicomweb)")
if not os.path.exists("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"):
    skip("Orthanc's DICOMweb plugin is not installed (orthanc-dicomweb)")
try:
    import pydicom
    from pydicom.uid import generate_uid
except ImportError:
    skip("pydicom is not installed for /usr/bin/python3 (python3-pydicom)")

# The real files: the shared data when it is there (a 512x512 CT, the 10-frame MR emri_small), else
# the test files Debian's python3-pydicom ships (CT_small 128x128; MR_small made a 3-frame MR by
# repeating its frame: the package has no multi-frame MR).
shared = os.environ.get("HEALTHGPT_SHARED_DATA") or os.path.join(args.repo, "..", "shared", "data")
dicom_dir = os.path.join(shared, "medical", "dicom")
CT_FILE = os.path.join(dicom_dir, "CT1_UNC.explicit_little_endian.dcm")
MR_FILE = os.path.join(dicom_dir, "emri_small.dcm")
DEBIAN_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
MR_FROM_SINGLE_FRAME = None
if not (os.path.exists(CT_FILE) and os.path.exists(MR_FILE)) or os.environ.get("HG_PACS_USE_DEBIAN_DATA"):
    CT_FILE = os.path.join(DEBIAN_FILES, "CT_small.dcm")
    MR_FROM_SINGLE_FRAME = os.path.join(DEBIAN_FILES, "MR_small.dcm")
    for f in (CT_FILE, MR_FROM_SINGLE_FRAME):
        if not os.path.exists(f):
            skip(f"neither the shared data ({dicom_dir}; set HEALTHGPT_SHARED_DATA) nor pydicom's {f} is there")
    print("note: shared data not found (or HG_PACS_USE_DEBIAN_DATA set): using pydicom's test files", flush=True)

ORTHANC_SH = os.path.join(args.repo, "scripts", "orthanc.sh")
work = os.path.abspath(args.workdir)
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
failures = []
started = []  # Orthanc folders to stop
servers = []  # our own HTTP servers


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def start_orthanc(name, user=None, password_file=None):
    d = os.path.join(work, name)
    cmd = [ORTHANC_SH, "start", d]
    if user:
        cmd += ["--user", user, "--password-file", password_file]
    started.append(d)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if r.returncode == SKIP:
        skip(r.stderr.strip())
    if r.returncode != 0:
        raise RuntimeError(f"orthanc.sh start {name} failed: {r.stderr}")
    url = r.stdout.strip()
    return url, int(open(os.path.join(d, "port")).read())


def stop_orthanc(d):
    subprocess.run([ORTHANC_SH, "stop", d], capture_output=True, timeout=30)


def rest(port, path, data=None, auth=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    if auth:
        import base64
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(req, timeout=20) as r:
        body = r.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body


def load(port, path):
    with open(path, "rb") as f:
        return rest(port, "/instances", data=f.read())


def make_ct_series(dst):
    """Three slices of one real CT series: the original and two copies with new SOP UIDs."""
    os.makedirs(dst, exist_ok=True)
    out = []
    for i in range(3):
        ds = pydicom.dcmread(CT_FILE)
        if i:
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = int(ds.get("InstanceNumber", 1) or 1) + i
            if "ImagePositionPatient" in ds:
                p = [float(x) for x in ds.ImagePositionPatient]
                ds.ImagePositionPatient = [p[0], p[1], p[2] + 5.0 * i]
        path = os.path.join(dst, f"ct{i}.dcm")
        ds.save_as(path)
        out.append(path)
    return out


class SilentHandler(http.server.BaseHTTPRequestHandler):
    """Accepts, reads the request, then says nothing for 30 s (the client must time out first)."""

    def do_GET(self):
        time.sleep(30)

    def log_message(self, *a):
        pass


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    """/MODE/rest-of-path -> the target Orthanc, with MODE's fault applied to WADO-RS bodies."""
    targets = {}  # mode -> (port, orthanc folder or None)
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        mode, _, rest_path = self.path.lstrip("/").partition("/")
        port, folder = self.targets.get(mode, (None, None))
        if port is None:
            self.send_error(404)
            return
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            c.request("GET", "/" + rest_path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
            r = c.getresponse()
            body = r.read()
        except OSError:
            self.close_connection = True  # the PACS is gone: the connection just ends
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        ctype = r.getheader("Content-Type", "")
        wado = ctype.startswith("multipart/related")
        if wado and mode == "garble":
            body = body[: len(body) * 2 // 3]  # a body that ends inside a part, sent as if complete
        if wado and mode == "notdicom":
            boundary = ctype.split("boundary=")[1].split(";")[0].strip('"').encode()
            parts = body.split(b"\r\n--" + boundary)
            head, sep, data = parts[0].partition(b"\r\n\r\n")
            parts[0] = head + sep + data[:400]  # the first instance truncated: GDCM cannot read it
            body = (b"\r\n--" + boundary).join(parts)
        self.send_response(r.status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if wado and mode in ("cut", "stop"):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            if mode == "stop" and folder:
                stop_orthanc(folder)  # Orthanc goes away in the middle of the transfer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def serve(handler):
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start()
    servers.append(s)
    return s.server_address[1]


def run(cmd, env=None, timeout=120):
    e = dict(os.environ)
    e.update(env or {})
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    return r, time.time() - t0


try:
    # --- the PACS and its faults -------------------------------------------------------------
    url_a, port_a = start_orthanc("orthanc-a")
    pw_file = os.path.join(work, "orthanc-b.password")
    with open(pw_file, "w") as f:
        f.write("correct-horse-battery\n")
    os.chmod(pw_file, 0o600)
    url_b, port_b = start_orthanc("orthanc-b", "hgtest", pw_file)
    url_c, port_c = start_orthanc("orthanc-c")

    if MR_FROM_SINGLE_FRAME:
        mr_ds = pydicom.dcmread(MR_FROM_SINGLE_FRAME)
        # three different frames (the original, its bytes reversed, rotated by one sample), so that
        # a test of frame order can tell them apart
        px = mr_ds.PixelData
        mr_ds.PixelData = px + px[::-1] + px[2:] + px[:2]
        mr_ds.NumberOfFrames = 3
        mr_ds.SOPInstanceUID = generate_uid()
        mr_ds.file_meta.MediaStorageSOPInstanceUID = mr_ds.SOPInstanceUID
        MR_FILE = os.path.join(work, "mr_3frames.dcm")
        mr_ds.save_as(MR_FILE)
    ct_files = make_ct_series(os.path.join(work, "load"))
    for p in ct_files:
        load(port_a, p)
        load(port_c, p)
    load(port_a, MR_FILE)
    ct = pydicom.dcmread(CT_FILE, stop_before_pixels=True)
    mr = pydicom.dcmread(MR_FILE, stop_before_pixels=True)
    check(len(rest(port_a, "/instances")) == 4, "Orthanc A holds the 3 CT slices and the MR")

    slow_port = serve(SilentHandler)
    ProxyHandler.targets = {m: (port_a, None) for m in ("pass", "cut", "garble", "notdicom")}
    ProxyHandler.targets["stop"] = (port_c, os.path.join(work, "orthanc-c"))
    proxy_port = serve(ProxyHandler)

    env = {
        "HG_ORTHANC_URL": url_a,
        "HG_PACS_CT_PATIENT": str(ct.PatientID),
        "HG_PACS_CT_STUDY": str(ct.StudyInstanceUID),
        "HG_PACS_CT_SERIES": str(ct.SeriesInstanceUID),
        "HG_PACS_CT_COUNT": "3",
        "HG_PACS_CT_ROWS": str(int(ct.Rows)),
        "HG_PACS_MR_STUDY": str(mr.StudyInstanceUID),
        "HG_PACS_MR_SERIES": str(mr.SeriesInstanceUID),
        "HG_PACS_MR_FRAMES": str(int(mr.NumberOfFrames)),
        "HG_ORTHANC_AUTH_URL": url_b,
        "HG_ORTHANC_AUTH_USER": "hgtest",
        "HG_ORTHANC_AUTH_PASSWORD_FILE": pw_file,
        "HG_PACS_SLOW_URL": f"http://127.0.0.1:{slow_port}/dicom-web",
        "HG_PACS_PROXY": f"http://127.0.0.1:{proxy_port}",
    }

    # --- 1. the client in-process ------------------------------------------------------------
    r, took = run([args.test_unit, "--gtest_filter=PacsOrthanc.*:PacsServer.*"], env)
    print(r.stdout[-4000:])
    check(r.returncode == 0, f"test_unit PacsOrthanc.*:PacsServer.* passes ({took:.1f} s)")
    check("[  SKIPPED ]" not in r.stdout and "[  PASSED  ] 11 tests" in r.stdout,
          "all 11 PacsOrthanc and PacsServer tests ran (none skipped)")

    # --- 2. healthgpt ask --pacs --pacs-store --------------------------------------------------
    model = os.path.join(work, "demo-model")
    r, _ = run([args.healthgpt, "make-demo-model", model])
    check(r.returncode == 0, "demo model made")
    tmp = os.path.join(work, "tmp")
    os.makedirs(tmp)
    cli_env = {"TMPDIR": tmp}
    ask = [args.healthgpt, "ask", "-m", model, "-n", "16"]
    before = len(rest(port_a, "/instances"))
    r, took = run(ask + ["--pacs", url_a, "--study", env["HG_PACS_CT_STUDY"], "--series", env["HG_PACS_CT_SERIES"],
                         "--pacs-store", "Is there a fracture?"], cli_env)
    print(r.stderr[-2000:])
    check(r.returncode == 0, f"ask --pacs --pacs-store on the CT series exits 0 ({took:.1f} s)")
    check("retrieved 3 instance(s)" in r.stderr, "the CLI retrieved the 3 CT slices")
    check(len(rest(port_a, "/instances")) == before + 2, "Orthanc gained exactly 2 instances (the SR and one SC)")
    check(os.listdir(tmp) == [], "no temporary files left by the CLI")

    study_id = rest(port_a, "/tools/lookup", data=env["HG_PACS_CT_STUDY"].encode())[0]["ID"]
    series = rest(port_a, f"/studies/{study_id}/series")
    by_mod = {}
    for s in series:
        by_mod.setdefault(s["MainDicomTags"].get("Modality"), []).append(s)
    check(set(by_mod) == {"CT", "SR", "OT"}, f"the study's series are CT, SR and OT (got {sorted(by_mod)})")
    m = re.search(r"stored SR ([0-9.]+) \(series [0-9.]+\) and 1 Secondary Capture\(s\) \(series ([0-9.]+)\)", r.stderr)
    check(m is not None, "the CLI names the stored SR and SC")
    if m:
        sr_id = rest(port_a, "/tools/lookup", data=m.group(1).encode())[0]["ID"]
        sc_series_id = rest(port_a, "/tools/lookup", data=m.group(2).encode())[0]["ID"]
        sc_id = rest(port_a, f"/series/{sc_series_id}")["Instances"][0]
        sr_path = os.path.join(work, "sr.dcm")
        sc_path = os.path.join(work, "sc.dcm")
        with open(sr_path, "wb") as f:
            f.write(rest(port_a, f"/instances/{sr_id}/file"))
        with open(sc_path, "wb") as f:
            f.write(rest(port_a, f"/instances/{sc_id}/file"))
        sr = pydicom.dcmread(sr_path)
        check(sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11", "pydicom: the SR is a Basic Text SR")
        check(sr.StudyInstanceUID == env["HG_PACS_CT_STUDY"], "pydicom: the SR is in the source study")
        check(sr.SeriesInstanceUID != env["HG_PACS_CT_SERIES"], "pydicom: the SR is in a new series")
        check(str(sr.PatientID) == env["HG_PACS_CT_PATIENT"], "pydicom: the SR names the study's patient")
        items = {}
        for it in sr.ContentSequence:
            code = it.ConceptNameCodeSequence[0].CodeValue
            items[code] = it.get("TextValue", it.get("UID"))
        check(items.get("QUESTION") == "Is there a fracture?", "pydicom: the SR holds the question")
        check(bool(items.get("ANSWER")), "pydicom: the SR holds an answer")
        check(items.get("MODEL") == "demo-model", "pydicom: the SR names the model")
        check(items.get("PLUGIN") == "com" and len(items.get("PLUGIN-SHA256", "")) == 64,
              "pydicom: the SR names the plugin and its SHA-256")
        check("Not a diagnosis" in items.get("NOTICE", ""), "pydicom: the SR says it is not a diagnosis")
        refs = []
        for st in sr.CurrentRequestedProcedureEvidenceSequence:
            for se in st.ReferencedSeriesSequence:
                for sop in se.ReferencedSOPSequence:
                    refs.append((st.StudyInstanceUID, se.SeriesInstanceUID, sop.ReferencedSOPInstanceUID))
        check(len(refs) == 3, f"the SR references the 3 source instances (got {len(refs)})")
        resolved = 0
        for study_uid, series_uid, sop_uid in refs:
            hits = rest(port_a, "/tools/lookup", data=sop_uid.encode())
            if len(hits) == 1 and hits[0]["Type"] == "Instance":
                tags = rest(port_a, f"/instances/{hits[0]['ID']}/simplified-tags")
                resolved += tags.get("SeriesInstanceUID") == series_uid and tags.get("StudyInstanceUID") == study_uid
        check(resolved == 3, "every reference of the SR resolves in Orthanc to an instance of the source series")
        sc = pydicom.dcmread(sc_path)
        check(sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and sc.Modality == "OT", "pydicom: the SC is a Secondary Capture")
        check(sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3 and sc.BitsAllocated == 8 and
              len(sc.PixelData) in (sc.Rows * sc.Columns * 3, sc.Rows * sc.Columns * 3 + 1),
              f"pydicom: the SC holds {sc.Rows}x{sc.Columns} 8-bit RGB pixels")
        # GDCM (through our decoder, which runs it in a child process) reads both back too
        r, _ = run([args.healthgpt, "ask", "-m", model, "-n", "2", "--image", sc_path, "--", "What is this?"], cli_env)
        check(r.returncode == 0, "our decoder (GDCM) reads the SC back")
        r, _ = run([args.healthgpt, "ask", "-m", model, "-n", "2", "--image", sr_path, "--", "What is this?"], cli_env)
        check(r.returncode == 1 and "no pixel data" in r.stderr,
              "GDCM parses the SR and our decoder refuses it as an image (no pixel data): " + r.stderr.strip()[-200:])
        r = subprocess.run(["dcmdump", sr_path], capture_output=True, text=True) if shutil.which("dcmdump") else None
        if r is not None:
            check(r.returncode == 0 and ("Basic Text SR" in r.stdout or "BasicTextSR" in r.stdout), "dcmdump (DCMTK) reads the SR")

    r, took = run(ask + ["--pacs", url_a, "--study", env["HG_PACS_MR_STUDY"], "What is shown?"], cli_env)
    check(r.returncode == 0 and "retrieved 1 instance(s)" in r.stderr and f"of {env['HG_PACS_MR_FRAMES']}" in r.stderr,
          f"ask --pacs on the {env['HG_PACS_MR_FRAMES']}-frame MR (series picked from the study) exits 0 ({took:.1f} s): " + r.stderr[-300:])

    # healthgpt serve reads --pacs-config at start: a bad one stops it with a message, no secret
    loose = os.path.join(work, "loose-pacs.json")
    with open(loose, "w") as f:
        json.dump({"pacs": [{"name": "a", "url": url_b, "auth": {"type": "basic", "user": "hgtest",
                                                                 "password": "inline-secret-55"}}]}, f)
    os.chmod(loose, 0o644)
    r, _ = run([args.healthgpt, "serve", "-m", model, "--data-dir", os.path.join(work, "serve-data"), "--port", "0",
                "--pacs-config", loose], timeout=60)
    check(r.returncode == 1 and "chmod 600" in r.stderr and "inline-secret-55" not in r.stderr + r.stdout,
          "serve --pacs-config refuses an inline password others can read, without printing it: " + r.stderr.strip()[-160:])

    # --- 2b. the web page's PACS panel in a headless Chromium (tests/pacs/pacs_page_test.py) -----
    r, took = run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pacs_page_test.py"),
                   "--healthgpt", args.healthgpt, "--model", model, "--workdir", os.path.join(work, "page"),
                   "--dicomweb", url_a, "--orthanc-port", str(port_a), "--patient", env["HG_PACS_CT_PATIENT"],
                   "--study", env["HG_PACS_CT_STUDY"], "--series", env["HG_PACS_CT_SERIES"], "--deadline-s", "60"], timeout=90)
    print(r.stdout[-3000:] + r.stderr[-1500:])
    if r.returncode == SKIP:
        print("note: the PACS page test was skipped: " + r.stdout.strip()[-200:])
    else:
        check(r.returncode == 0, f"the page's PACS panel: search, import, scroll, ask, send the SR; Orthanc has it ({took:.1f} s)")

    # --- 3. the CLI's faults -----------------------------------------------------------------
    n_a = len(rest(port_a, "/instances"))
    bad_pw = os.path.join(work, "wrong.password")
    with open(bad_pw, "w") as f:
        f.write("wrong-password-123\n")
    r, _ = run(ask + ["--pacs", url_b, "--study", env["HG_PACS_CT_STUDY"], "--pacs-user", "hgtest",
                      "--pacs-password-file", bad_pw, "--pacs-store", "q"], cli_env)
    check(r.returncode == 1 and "HTTP 401" in r.stderr, "a wrong password: exit 1, HTTP 401 named: " + r.stderr.strip()[-200:])
    check("wrong-password-123" not in r.stderr + r.stdout and "correct-horse" not in r.stderr, "no password in the output")
    check(len(rest(port_b, "/instances", auth="hgtest:correct-horse-battery")) == 0, "nothing stored in the authenticated Orthanc")

    r, took = run(ask + ["--pacs", env["HG_PACS_SLOW_URL"], "--study", env["HG_PACS_CT_STUDY"], "--pacs-timeout", "1", "q"],
                  cli_env)
    check(r.returncode == 1 and "did not answer within the read timeout" in r.stderr and took < 15,
          f"a silent server: exit 1 after {took:.1f} s: " + r.stderr.strip()[-200:])

    proxy = env["HG_PACS_PROXY"]
    r, took = run(ask + ["--pacs", proxy + "/stop/dicom-web", "--study", env["HG_PACS_CT_STUDY"], "--series",
                         env["HG_PACS_CT_SERIES"], "--pacs-store", "q"], cli_env)
    check(r.returncode == 1 and "failed during the transfer" in r.stderr,
          f"Orthanc stopped mid-transfer: exit 1 ({took:.1f} s): " + r.stderr.strip()[-250:])
    c_pid = os.path.join(work, "orthanc-c", "orthanc.pid")
    check(not os.path.exists(c_pid), "Orthanc C was really stopped in the middle of the transfer")

    r, _ = run(ask + ["--pacs", proxy + "/notdicom/dicom-web", "--study", env["HG_PACS_CT_STUDY"], "--series",
                      env["HG_PACS_CT_SERIES"], "--pacs-store", "q"], cli_env)
    check(r.returncode == 1 and "DICOM decoder refused" in r.stderr,
          "an instance GDCM refuses: exit 1: " + r.stderr.strip()[-250:])
    r, _ = run(ask + ["--pacs", proxy + "/garble/dicom-web", "--study", env["HG_PACS_CT_STUDY"], "--series",
                      env["HG_PACS_CT_SERIES"], "q"], cli_env)
    check(r.returncode == 1 and ("multipart" in r.stderr.lower() or "boundary" in r.stderr),
          "a malformed multipart body: exit 1: " + r.stderr.strip()[-250:])
    check(os.listdir(tmp) == [], "no temporary files left after the faults")
    check(len(rest(port_a, "/instances")) == n_a, "nothing stored in Orthanc A by the failed runs")
finally:
    for s in servers:
        s.shutdown()
    for d in started:
        stop_orthanc(d)

if failures:
    print(f"{len(failures)} check(s) failed:")
    for f in failures:
        print("  " + f)
    sys.exit(1)
print("all PACS checks passed")
