from cepr.cli import main

raise SystemExit(main())
