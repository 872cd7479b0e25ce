"""The console's page in a real browser: Debian's chromium, headless, driven
by python3-selenium through chromium-driver.  A mail sent with smtplib
appears without a reload; its trace shows the hook that refused a
recipient; an attachment downloads with its bytes; the browser's console
logs no error.  The screenshot goes to the project's
build/test-output/console.png (LUASMTPD_TEST_OUTPUT moves it), the one
docs/console.md shows."""
import os
import smtplib
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

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

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
    m.add_alternative("<p>Motion <b>detected</b> in zone 3 <script>alert(1)</script>"
                      "<img src='http://192.0.2.9/track.png'></p>", subtype="html")
    m.add_attachment(PICTURE, maintype="image", subtype="jpeg", filename="snap.jpg")
    return m


@unittest.skipUnless(webdriver and os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK),
                     "chromium, chromium-driver or python3-selenium not installed (scripts/deps.sh)")
class Console(unittest.TestCase):
    def setUp(self):
        rules = tmp_path("browser.lua")
        with open(rules, "w") as f:
            f.write(RULES)
        self.http = free_port()
        self.srv = Server("--http", str(self.http), rules, listen="127.0.0.1:%d" % free_port(), log_level="info")
        self.addCleanup(self.srv.stop)
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

        with smtplib.SMTP("127.0.0.1", self.srv.port, local_hostname="cam3.lan", timeout=10) as c:
            refused = c.send_message(alarm())
        self.assertEqual(refused, {"nobody@site.example": (550, b"5.1.1 no such user")})

        # it appears without a reload, coloured as accepted
        item = self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#messages li")))
        self.assertIn("Motion in zone 3", item.text)
        self.assertIn("c2", item.get_attribute("class"))
        item.click()

        # the trace names the hook that refused the recipient
        self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#detail .timeline")))
        rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#detail .timeline tr.t-stage")]
        refusal = [r for r in rows if "550" in r]
        self.assertEqual(len(refusal), 1, rows)
        self.assertIn("rcpt", refusal[0])
        self.assertIn("on_rcpt (", refusal[0])
        self.assertIn("5.1.1 no such user", refusal[0])
        notes = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#detail .timeline tr.t-note")]
        self.assertEqual(len(notes), 1)
        self.assertIn("matched rule camera-3", notes[0])

        # the HTML in a sandbox: its script does not run (no alert to dismiss)
        d.find_element(By.XPATH, "//div[@class='tabs']/button[text()='HTML']").click()
        frame = self.wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#detail iframe")))
        self.assertEqual(frame.get_attribute("sandbox"), "")

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


if __name__ == "__main__":
    unittest.main()
