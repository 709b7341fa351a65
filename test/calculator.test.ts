import { test } from 'tap'
import { CalculationError, calculate, calculateAdvanced } from '../src/calculator/math.js'

test('binary operations give finite results', async t => {
  t.equal(calculate(2, 3, 'add'), 5)
  t.equal(calculate(2, 3, 'subtract'), -1)
  t.equal(calculate(2, 3, 'multiply'), 6)
  t.equal(calculate(3, 2, 'divide'), 1.5)
  t.equal(calculate(2, 10, 'power'), 1024)
  t.equal(calculate(7, 3, 'modulo'), 1)
  t.equal(Object.is(calculate(0, -1, 'multiply'), 0), true, 'negative zero is reported as 0')
})

test('binary domain failures are CalculationErrors a person can read', async t => {
  t.throws(() => calculate(1, 0, 'divide'), new CalculationError('Division by zero is undefined: b must not be 0'))
  t.throws(() => calculate(1, 0, 'modulo'), new CalculationError('Modulo by zero is undefined: b must not be 0'))
  t.throws(() => calculate(1e308, 10, 'multiply'), /too large to represent/)
  t.throws(() => calculate(10, 400, 'power'), /too large to represent/)
  t.throws(() => calculate(-8, 0.5, 'power'), /no real result/)
})

test('advanced operations and their domains', async t => {
  t.equal(calculateAdvanced('factorial', 5), 120)
  t.equal(calculateAdvanced('factorial', 0), 1)
  t.ok(Number.isFinite(calculateAdvanced('factorial', 170)))
  t.throws(() => calculateAdvanced('factorial', 171), /at most 170/)
  t.throws(() => calculateAdvanced('factorial', 2.5), /non-negative integers/)
  t.throws(() => calculateAdvanced('factorial', -1), /non-negative integers/)
  t.equal(calculateAdvanced('sqrt', 16), 4)
  t.throws(() => calculateAdvanced('sqrt', -1), /not a real number/)
  t.equal(calculateAdvanced('log', 1000), 3)
  t.equal(calculateAdvanced('log', 8, 2), 3)
  t.throws(() => calculateAdvanced('log', 0), /positive values only/)
  t.throws(() => calculateAdvanced('log', 8, 1), /base must be positive and not 1/)
  t.equal(calculateAdvanced('ln', Math.E), 1)
  t.throws(() => calculateAdvanced('ln', -1), /positive values only/)
  t.equal(calculateAdvanced('sin', 0), 0)
  t.equal(calculateAdvanced('cos', 0), 1)
  t.equal(calculateAdvanced('tan', 0), 0)
  t.equal(calculateAdvanced('abs', -4), 4)
})
