# PACS integration (docs/PACS.md): a real Orthanc from Debian on 127.0.0.1, loaded with the shared
# DICOM files, driven by tests/pacs/pacs_test.py (/usr/bin/python3: Debian's pydicom). Skipped
# (exit 77) without Orthanc, its DICOMweb plugin, pydicom or the shared data.
add_test(NAME pacs_orthanc
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/pacs/pacs_test.py
                 --healthgpt $<TARGET_FILE:healthgpt_cli> --test-unit $<TARGET_FILE:test_unit>
                 --workdir ${CMAKE_BINARY_DIR}/test-pacs --repo ${CMAKE_SOURCE_DIR})
set_tests_properties(pacs_orthanc PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 LABELS pacs)
