// The schemas' cross-field rules evaluated with @bufbuild/cel, the way the API server evaluates them. Imported for
// its effect by validate.ts; kept apart so that a receiver, which parses withoutRules, never loads CEL.
import { celEnv, parse, plan } from '@bufbuild/cel';
import { compiledOnce } from '../runtime/re2.ts';
import { setRuleEvaluator } from './rules.ts';

const env = celEnv({ re2: compiledOnce });
/**
 * Each rule parsed and planned once: the rules are the schemas' own, a fixed set, and parsing them again for every
 * resource was a third of the operator's CPU while it reconciled a burst of new resources.
 */
const programs = new Map<string, ReturnType<typeof plan>>();

setRuleEvaluator((rule, self) => {
  try {
    let program = programs.get(rule);
    if (!program) {
      program = plan(env, parse(rule));
      programs.set(rule, program);
    }
    return program({ self: self as never }) === true;
  } catch {
    return false; // as run() answers an error: the rule does not hold
  }
});
