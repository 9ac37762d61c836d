module example.com/katogovendored

go 1.19

require example.com/greet v1.0.0
