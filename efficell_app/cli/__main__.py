from efficell_app.cli import main

raise SystemExit(main())
