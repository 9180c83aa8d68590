from vectorlay.app.cli import main

raise SystemExit(main())
