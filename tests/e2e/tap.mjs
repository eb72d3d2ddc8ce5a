// tap.mjs - TAP output and the case runner of the SDK scripts (sdk_openai.mjs,
// sdk_more.mjs): "ok N - CASE: check" / "not ok N - ..." with "# " diagnostics.
let n = 0;
let failed = 0;

function text(diag) {
  if (typeof diag === 'string') return diag;
  if (diag instanceof Error) return `${diag.constructor.name} ${diag.status} ${diag.message}\n${diag.stack}`;
  return JSON.stringify(diag);
}

export function check(cond, name, diag) {
  n++;
  if (cond) {
    console.log(`ok ${n} - ${name}`);
    return true;
  }
  failed++;
  console.log(`not ok ${n} - ${name}`);
  if (diag !== undefined) {
    for (const line of text(diag).split('\n').slice(0, 20)) console.log(`# ${line}`);
  }
  return false;
}

// Runs the named cases of CASES in order, then the plan; the exit code is 1
// when a check failed. describe: how an unexpected error is shown.
export async function runCases(CASES, names, describe = (e) => e) {
  for (const name of names) {
    const fn = CASES[name];
    if (!fn) {
      check(false, `${name}: a known case`);
      continue;
    }
    try {
      await fn();
    } catch (e) {
      check(false, `${name}: runs without an unexpected error`, describe(e));
    }
  }
  check(names.length > 0, 'at least one case was run');
  console.log(`1..${n}`);
  process.exitCode = failed ? 1 : 0;
}
