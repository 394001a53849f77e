"""`python -m twoclocks.analyze STUDY_DIR`: see twoclocks.analyze.study_dir."""

import sys

from twoclocks.analyze.study_dir import main

sys.exit(main())
