"""The console's page in real browsers: Debian's chromium, headless, driven
by python3-selenium through chromium-driver; and Debian's firefox-esr,
headless, driven over WebDriver BiDi (Debian has no geckodriver for
selenium), its own WebSocket protocol.  A mail sent with smtplib
appears without a reload; its trace shows the hook that refused a
recipient; an attachment downloads with its bytes; the browser's console
logs no error.  The screenshot goes to the project's
build/test-output/console.png (LUASMTPD_TEST_OUTPUT moves it), the one
docs/console.md shows."""
import hashlib
import json
import os
import re
import smtplib
import subprocess
import time
import unittest
from email.message import EmailMessage

from harness import Server, free_port, tmp_path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")   # wherever the tests run from

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:          # scripts/deps.sh installs python3-selenium
    webdriver = None
try:
    import websocket
except ImportError:          # and python3-websocket
    websocket = None

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FIREFOX = "/usr/bin/firefox-esr"

RULES = '''
local l = require "luasmtpd"
function on_rcpt(addr)
  if addr:match("^nobody@") then return 550, "5.1.1 no such user" end
end
function on_mail(m)
  l.trace("matched rule camera-3")
end
'''

PICTURE = bytes(range(256)) * 16


def alarm():
    m = EmailMessage()
    m["From"] = "Camera 3 <cam3@site.example>"
    m["To"] = "ops@site.example, nobody@site.example"
    m["Subject"] = "Motion in zone 3"
    m.set_content("Motion detected in zone 3 at the gate.\n")
    m.add_alternative("<meta http-equiv='refresh' content='0; url=http://192.0.2.9/'>"
                      "<p>Motion <b>detected</b> in zone 3 <script>alert(1)</script>"
                      "<img src='http://192.0.2.9/track.png'></p>"
                      "<div style='background: url(\"http://192.0.2.9/map.png\")'>zone map</div>", subtype="html")
    m.add_attachment(PICTURE, maintype="image", subtype="jpeg", filename="snap.jpg")
    return m


def serve(test):
    """luasmtpd with RULES and the console on a port of its own, for test."""
    rules = tmp_path("browser.lua")
    with open(rules, "w") as f:
        f.write(RULES)
    test.http = free_port()
    test.srv = Server("--http", str(test.http), rules, listen="127.0.0.1:%d" % free_port(), log_level="info")
    test.addCleanup(test.srv.stop)


def send_alarm(test):
    with smtplib.SMTP("127.0.0.1", test.srv.port, local_hostname="cam3.lan", timeout=10) as c:
        refused = c.send_message(alarm())
    test.assertEqual(refused, {"nobody@site.example": (550, b"5.1.1 no such user")})


def check_refusal(test, rows, notes):
    """The trace's stage rows name the hook that refused the recipient; its
    note rows hold the script's own line."""
    refusal = [r for r in rows if "550" in r]
    test.assertEqual(len(refusal), 1, rows)
    test.assertIn("rcpt", refusal[0])
    test.assertIn("on_rcpt (", refusal[0])
    test.assertIn("5.1.1 no such user", refusal[0])
    test.assertEqual(len(notes), 1)
    test.assertIn("matched rule camera-3", notes[0])


def check_html(test, sandbox, srcdoc, note):
    """The message's HTML in a frame with every restriction, without its
    script and its two remote images, and the page says what it left out."""
    test.assertEqual(sandbox, "")
    test.assertIn("<b>detected</b>", srcdoc)
    test.assertNotIn("<script", srcdoc)
    test.assertNotIn("192.0.2.9", srcdoc)     # the images and the refresh
    test.assertEqual(note, "Scripts and remote content left out: 3")


@unittest.skipUnless(webdriver and os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK),
                     "chromium, chromium-driver or python3-selenium not installed (scripts/deps.sh)")
class Console(unittest.TestCase):
    def setUp(self):
        serve(self)
        self.downloads = tmp_path("downloads")
        os.makedirs(self.downloads, exist_ok=True)
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", "--user-data-dir=" + tmp_path("chromium-profile")):
            opts.add_argument(a)
        opts.add_experimental_option("prefs", {"download.default_directory": self.downloads,
                                               "download.prompt_for_download": False})
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        self.addCleanup(self.driver.quit)
        self.wait = WebDriverWait(self.driver, 15)

    def test_live_list_trace_download_and_no_console_errors(self):
        d = self.driver
        d.get("http://127.0.0.1:%d/" % self.http)
        self.wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))
        self.assertEqual(d.find_elements(By.CSS_SELECTOR, "#messages li"), [])

        send_alarm(self)

        # it appears without a reload, coloured as accepted
        item = self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#messages li")))
        self.assertIn("Motion in zone 3", item.text)
        self.assertIn("c2", item.get_attribute("class"))
        item.click()

        # the trace names the hook that refused the recipient
        self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#detail .timeline")))
        check_refusal(self, [r.text for r in d.find_elements(By.CSS_SELECTOR, "#detail .timeline tr.t-stage")],
                      [r.text for r in d.find_elements(By.CSS_SELECTOR, "#detail .timeline tr.t-note")])

        # the HTML in a sandbox, its remote content left out
        d.find_element(By.XPATH, "//div[@class='tabs']/button[text()='HTML']").click()
        frame = self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#detail iframe")))
        check_html(self, frame.get_attribute("sandbox"), frame.get_attribute("srcdoc"),
                   d.find_element(By.ID, "remote").text)

        # the SMTP dialogue
        d.find_element(By.XPATH, "//div[@class='tabs']/button[text()='Dialogue']").click()
        dialogue = self.wait.until(ec.presence_of_element_located((By.ID, "dialogue"))).text
        self.assertIn("C: rcpt TO:<nobody@site.example>", dialogue)
        self.assertIn("S: 550 5.1.1 no such user", dialogue)

        # the attachment downloads whole
        d.find_element(By.XPATH, "//div[@class='tabs']/button[text()='Attachments']").click()
        link = self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#attachments a")))
        self.assertEqual(link.text, "snap.jpg")
        link.click()
        path = os.path.join(self.downloads, "snap.jpg")
        deadline = time.monotonic() + 15
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), PICTURE)

        d.find_element(By.XPATH, "//div[@class='tabs']/button[text()='Trace']").click()
        self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#detail .timeline")))
        out = os.environ.get("LUASMTPD_TEST_OUTPUT", os.path.join(ROOT, "build", "test-output"))
        os.makedirs(out, exist_ok=True)
        shot = os.path.join(out, "console.png")
        self.assertTrue(d.save_screenshot(shot))
        self.assertGreater(os.path.getsize(shot), 10000)

        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE"]
        self.assertEqual(errors, [])



class Bidi:
    """Firefox, headless, and a WebDriver BiDi session with it over its
    WebSocket: commands in order, the events that arrive meanwhile kept."""

    def __init__(self, profile, log):
        os.makedirs(profile, exist_ok=True)
        with open(os.path.join(profile, "user.js"), "w") as f:
            f.write('user_pref("browser.shell.checkDefaultBrowser", false);\n')
        self.log = log
        with open(log, "w") as out:
            self.proc = subprocess.Popen([FIREFOX, "--headless", "--no-remote", "--profile", profile,
                                          "--remote-debugging-port=0", "about:blank"],
                                         stdout=out, stderr=subprocess.STDOUT)
        self.ws, self.n, self.events = None, 0, []
        try:
            url = self._listening(60)
            self.ws = websocket.create_connection(url + "/session", timeout=20, suppress_origin=True)
            self.cmd("session.new", capabilities={})
            self.cmd("session.subscribe", events=["log.entryAdded"])
            self.context = self.cmd("browsingContext.getTree")["contexts"][0]["context"]
        except BaseException:
            self.close()
            raise

    def _listening(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.proc.poll() is None:
            with open(self.log) as f:
                m = re.search(r"WebDriver BiDi listening on (ws://\S+)", f.read())
            if m:
                return m.group(1)
            time.sleep(0.1)
        raise AssertionError("firefox did not listen for WebDriver BiDi; its output is in " + self.log)

    def cmd(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if msg.get("type") == "error":
                    raise AssertionError("%s: %s" % (method, msg))
                return msg["result"]
            self.events.append(msg)

    def js(self, expression):
        """The value of a JavaScript expression in the page, a promise
        awaited: a string, number or boolean as it is (an expression whose
        value is a list or an object gives it as JSON.stringify's text)."""
        r = self.cmd("script.evaluate", expression=expression, target={"context": self.context},
                     awaitPromise=True)
        if r["type"] == "exception":
            raise AssertionError("%s: %s" % (expression, r["exceptionDetails"]["text"]))
        return r["result"].get("value")

    def wait(self, expression, seconds=15):
        """js(expression) once it is truthy."""
        deadline = time.monotonic() + seconds
        while True:
            v = self.js(expression)
            if v or time.monotonic() > deadline:
                return v
            time.sleep(0.1)

    def errors(self):
        self.js("0")      # the events sent before this answer are in
        return [e["params"] for e in self.events
                if e.get("method") == "log.entryAdded" and e["params"].get("level") == "error"]

    def close(self):
        if self.ws:
            try:
                self.cmd("session.end")
            except Exception:
                pass
            self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@unittest.skipUnless(websocket and os.access(FIREFOX, os.X_OK),
                     "firefox-esr or python3-websocket not installed (scripts/deps.sh)")
class ConsoleInFirefox(unittest.TestCase):
    def setUp(self):
        serve(self)
        self.b = Bidi(tmp_path("firefox-profile"), tmp_path("firefox.log"))
        self.addCleanup(self.b.close)

    def click_tab(self, name):
        self.b.js("Array.from(document.querySelectorAll('.tabs button')).find(b => b.textContent === %s).click()"
                  % json.dumps(name))

    def test_live_list_trace_attachment_and_no_console_errors(self):
        b = self.b
        b.cmd("browsingContext.navigate", context=b.context, url="http://127.0.0.1:%d/" % self.http,
              wait="complete")
        self.assertTrue(b.wait("document.getElementById('live').textContent.includes('live')"))
        self.assertEqual(b.js("document.querySelectorAll('#messages li').length"), 0)

        send_alarm(self)

        # it appears without a reload, coloured as accepted
        cls = b.wait("(() => { const li = document.querySelector('#messages li');"
                     " return li && li.textContent.includes('Motion in zone 3') && li.className })()")
        self.assertIn("c2", cls or "")
        b.js("document.querySelector('#messages li').click()")

        # the trace names the hook that refused the recipient
        rows = lambda kind: ("JSON.stringify(Array.from(document.querySelectorAll('#detail .timeline tr.%s'),"
                             " r => r.innerText))" % kind)
        self.assertTrue(b.wait("document.querySelector('#detail .timeline') !== null"))
        check_refusal(self, json.loads(b.js(rows("t-stage"))), json.loads(b.js(rows("t-note"))))

        # the HTML in a sandbox, its remote content left out
        self.click_tab("HTML")
        html = json.loads(b.wait("(() => { const f = document.querySelector('#detail iframe'); return f &&"
                                 " JSON.stringify([f.getAttribute('sandbox'), f.srcdoc, $('#remote').textContent]) })()"))
        check_html(self, *html)

        # the attachment, fetched as its link gives it: the same bytes
        self.click_tab("Attachments")
        got = b.wait("(async () => { const a = document.querySelector('#attachments a'); if (!a) return null;"
                     " const d = await crypto.subtle.digest('SHA-256', await (await fetch(a.href)).arrayBuffer());"
                     " return a.textContent + ' ' + Array.from(new Uint8Array(d),"
                     " x => x.toString(16).padStart(2, '0')).join('') })()")
        self.assertEqual(got, "snap.jpg " + hashlib.sha256(PICTURE).hexdigest())

        self.assertEqual(b.errors(), [])


if __name__ == "__main__":
    unittest.main()
