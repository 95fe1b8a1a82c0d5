from tagger.train import main

raise SystemExit(main())
