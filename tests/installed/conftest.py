# These files test the installed wheel from outside the source tree: tools/check_package.sh
# copies them there and runs them. The in-tree run (pytest tests) leaves them out.
collect_ignore_glob = ["test_*.py"]
