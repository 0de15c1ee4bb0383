from course.lectures.cli import main

raise SystemExit(main())
