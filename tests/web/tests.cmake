# The web page in a real headless Chromium (tests/web/web_page_test.py, Debian's chromium,
# chromium-driver and python3-selenium, for /usr/bin/python3). Skipped (exit 77) only when one of
# them is missing or no real DICOM is found; loopback only; screenshots under test-web/screenshots.
if(EXISTS /usr/bin/python3)
  add_test(NAME web_page_chromium
           COMMAND /usr/bin/python3 ${CMAKE_CURRENT_LIST_DIR}/web_page_test.py
                   --healthgpt $<TARGET_FILE:healthgpt_cli> --workdir ${CMAKE_BINARY_DIR}/test-web --deadline-s 150)
  set_tests_properties(web_page_chromium PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 LABELS web)
endif()
