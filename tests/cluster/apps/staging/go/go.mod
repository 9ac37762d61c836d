module example.com/katogo

go 1.19
