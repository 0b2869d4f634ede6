from servegate.cli.main import main

raise SystemExit(main())
