// Express, installed at staging by `npm ci`.
const express = require("express");
const app = express();
app.get("/", (req, res) => res.json({ app: "express", express: require("express/package.json").version, pid: process.pid }));
app.listen(Number(process.env.PORT), "0.0.0.0", () => console.log("express: serving on port " + process.env.PORT));
