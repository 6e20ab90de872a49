"""Everything widecli prints: the consoles and one-line messages (`console`), tables fitted to the
terminal (`fit`), THE progress component (`progress`), the terminal Table 1 (`table1`), charts
(`charts`) and each command's output (`previews`, `runs`, `analyses`, `tuning`). Renderers lay out what
the packages below computed; they compute nothing themselves."""
