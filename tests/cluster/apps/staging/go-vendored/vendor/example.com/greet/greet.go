// Package greet stands for a third-party module, vendored with the app.
package greet

// Hello is what the app answers.
func Hello() string { return "hello from a vendored module" }
